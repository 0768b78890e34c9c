"""J-score (Logacheva et al., 2022, ParaDetox): style accuracy x content similarity x fluency, per sample."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from ._hf import LazyModel, batched, require_model
from ._text import check_lengths

SCORES = ("jscore", "sta", "sim", "fl")


def label_index(config, label: str, model: str) -> int:
    """The class index whose name (``config.id2label``) is ``label``; names the model and its labels if none is."""
    for index, name in config.id2label.items():
        if name == label:
            return int(index)
    raise ValueError(
        f"JScore: classifier {model!r} has no label {label!r}; its labels (config.id2label) are "
        f"{dict(config.id2label)}. Pass the name of the wanted class as the label option."
    )


class JScore(Metric):
    """Mean over samples of STA x SIM x FL (ParaDetox's J), and the means of the three parts.

    Per prediction, from three Hugging Face models (names or local paths, all required:
    there are no default models, so nothing is downloaded):

    - STA, style accuracy: 1 when ``style_classifier`` predicts the class named
      ``style_label`` for the prediction, else 0. ParaDetox uses
      ``s-nlp/roberta_toxicity_classifier``, whose non-toxic class is ``"neutral"``.
    - SIM, content similarity: the cosine between the source (the toxic input) and the
      prediction embedded by ``similarity_model`` (the last hidden state averaged over
      the attention mask, sentence-transformers' mean pooling), clipped at 0. ParaDetox
      uses Wieting et al.'s SIM model, which is not a Hugging Face model, so values
      differ from the paper's; use an encoder trained for mean pooling, e.g.
      ``sentence-transformers/all-MiniLM-L6-v2``.
    - FL, fluency: 1 when ``fluency_classifier`` predicts the class named ``fluency_label``.
      ParaDetox uses Krishna et al.'s CoLA classifier,
      ``cointegrated/roberta-large-cola-krishna2020``, whose acceptable class is index 0
      (ParaDetox's evaluation code); its config is believed to leave the classes unnamed,
      hence the default ``"LABEL_0"``. Were that wrong, the missing name is an error.

    Labels are chosen by name, never by index; a missing name is an error that lists the
    model's labels. ``compute`` returns ``{"jscore", "sta", "sim", "fl"}``: J is the mean
    of the per-sample products, not the product of the means. Texts are cut to
    ``max_length`` tokens and run ``batch_size`` at a time, without gradients.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        style_classifier: str | None = None,
        similarity_model: str | None = None,
        fluency_classifier: str | None = None,
        style_label: str = "neutral",
        fluency_label: str = "LABEL_0",
        max_length: int = 512,
        batch_size: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        kind = "sequence-classification model"
        self._style = LazyModel(
            require_model(style_classifier, "style_classifier", "JScore", kind), head="classifier"
        )
        self._similarity = LazyModel(
            require_model(similarity_model, "similarity_model", "JScore", "sentence encoder"), head="encoder"
        )
        self._fluency = LazyModel(
            require_model(fluency_classifier, "fluency_classifier", "JScore", kind), head="classifier"
        )
        self.style_label = style_label
        self.fluency_label = fluency_label
        self.max_length = max_length
        self.batch_size = batch_size
        for name in SCORES:
            self.add_state(f"{name}_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def _encode(self, tokenizer, texts: list[str]):
        return tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)

    def _decisions(self, classifier: LazyModel, label: str, texts: list[str]) -> torch.Tensor:
        """1.0 where the classifier's most probable class is ``label``, else 0.0."""
        tokenizer, model = classifier.get(self.device)
        wanted = label_index(model.config, label, classifier.path)
        chosen = [
            model(**self._encode(tokenizer, chunk)).logits.argmax(dim=-1) for chunk in batched(texts, self.batch_size)
        ]
        return (torch.cat(chosen) == wanted).double()

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Mean of the last hidden state over each text's real tokens [B, D]."""
        tokenizer, model = self._similarity.get(self.device)
        pooled = []
        for chunk in batched(texts, self.batch_size):
            batch = self._encode(tokenizer, chunk)
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled.append((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1))
        return torch.cat(pooled)

    @torch.no_grad()
    def sample_scores(self, sources: Sequence[str], predictions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Per-sample ``jscore``, ``sta``, ``sim`` and ``fl`` (float64 tensors [B]) of each prediction."""
        check_lengths(sources=sources, predictions=predictions)
        predictions = list(predictions)
        sta = self._decisions(self._style, self.style_label, predictions)
        fl = self._decisions(self._fluency, self.fluency_label, predictions)
        sim = F.cosine_similarity(self._embed(list(sources)), self._embed(predictions), dim=-1).clamp(min=0).double()
        return {"jscore": sta * sim * fl, "sta": sta, "sim": sim, "fl": fl}

    def update(self, sources: Sequence[str], predictions: Sequence[str]) -> None:
        check_lengths(sources=sources, predictions=predictions)
        if not predictions:
            return
        for name, values in self.sample_scores(sources, predictions).items():
            setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + values.sum())
        self.count += len(predictions)

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.clamp(min=1)
        return {name: getattr(self, f"{name}_sum") / count for name in SCORES}
