"""Hugging Face models used by the model-based metrics, loaded lazily and kept out of the module tree."""

import torch


def require_model(model: str | None, argument: str, metric: str, kind: str) -> str:
    """Model-based metrics never pick (and so never download) a default model."""
    if not model:
        raise ValueError(
            f"{metric} needs `{argument}`: the name or local path of a Hugging Face {kind}. "
            "There is no default model, so nothing is downloaded."
        )
    return model


# The transformers Auto class that loads each kind of model a metric runs.
HEADS = {
    "encoder": "AutoModel",
    "causal_lm": "AutoModelForCausalLM",
    "classifier": "AutoModelForSequenceClassification",
}


class LazyModel:
    """A frozen tokenizer + model, loaded on first use and moved to the caller's device.

    ``head`` names the kind of model (a key of ``HEADS``). It is a plain object, not an
    ``nn.Module``, so the weights never join a LightningModule's parameters, optimizer
    or checkpoint when a metric is an attribute.
    """

    def __init__(self, path: str, head: str) -> None:
        if head not in HEADS:
            raise ValueError(f"LazyModel head must be one of {sorted(HEADS)}, got {head!r}")
        self.path = path
        self.head = head
        self._pair = None

    def get(self, device: torch.device):
        if self._pair is None:
            import transformers

            loader = getattr(transformers, HEADS[self.head])
            model = loader.from_pretrained(self.path).eval().requires_grad_(False)
            self._pair = (transformers.AutoTokenizer.from_pretrained(self.path), model)
        tokenizer, model = self._pair
        if model.device != device:
            model.to(device)
        return tokenizer, model

    def __getstate__(self):
        """Pickle (e.g. for DDP spawn) only the path; each process reloads the weights."""
        return {"path": self.path, "head": self.head, "_pair": None}


def batched(items: list, size: int) -> list[list]:
    """``items`` cut into consecutive lists of ``size`` (the last may be shorter): how model metrics batch texts."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def causal_lm_batches(tokenizer, texts: list[str], max_length: int, batch_size: int, device: torch.device):
    """Yield right-padded ``(input_ids, attention_mask)`` batches for a causal LM.

    The tokenizer's BOS token, when it has one, is prepended so the first word is scored
    (Perplexity) and every text starts alike (MAUVE); texts are cut to ``max_length``.
    """
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    encoded = [(bos + tokenizer(text, add_special_tokens=False)["input_ids"])[:max_length] for text in texts]
    for chunk in batched(encoded, batch_size):
        width = max(1, max(len(ids) for ids in chunk))
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
        attention_mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        yield input_ids.to(device), attention_mask.to(device)
