"""Perplexity of generated text under a user-supplied causal language model."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from ._hf import LazyModel, causal_lm_batches, require_model


class Perplexity(Metric):
    """exp(total token NLL / number of scored tokens) of the predictions under causal LM ``model``.

    Token-level, pooled over the corpus (not a mean of per-text perplexities). Every token
    after the first is scored given its prefix; with a BOS token (e.g. GPT-2's) the first
    word is scored too. Texts are cut to ``max_length`` tokens. ``model`` is a name or local
    path and is required: there is no default, so nothing is downloaded.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, model: str | None = None, max_length: int = 1024, batch_size: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        self._lm = LazyModel(require_model(model, "model", "Perplexity", "causal language model"), head="causal_lm")
        self.max_length = max_length
        self.batch_size = batch_size
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, predictions: Sequence[str]) -> None:
        tokenizer, model = self._lm.get(self.device)
        for input_ids, attention_mask in causal_lm_batches(
            tokenizer, list(predictions), self.max_length, self.batch_size, self.device
        ):
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
            targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
            self.nll_sum += F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="sum").double()
            self.tokens += (targets != -100).sum()

    def compute(self) -> torch.Tensor:
        return torch.exp(self.nll_sum / self.tokens.clamp(min=1))
