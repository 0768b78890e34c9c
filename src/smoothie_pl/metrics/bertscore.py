"""BERTScore F1 (Zhang et al., 2020) by greedy cosine matching of contextual token embeddings."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from ._hf import LazyModel, batched, require_model
from ._text import check_lengths, reference_lists

# The hidden layer the ``bert-score`` package (0.3.13, ``model2layers``) uses for each model
# the shipped configs name, and for its per-language defaults (English: roberta-large,
# other languages: multilingual BERT). Other models use their last layer unless
# ``num_layers`` is given.
BERT_SCORE_LAYERS = {
    "microsoft/deberta-xlarge-mnli": 40,
    "roberta-large": 17,
    "bert-base-multilingual-cased": 9,
}


def default_layer(model: str) -> int | None:
    """``bert-score``'s layer for ``model`` (a hub name), or ``None``: its last layer."""
    return BERT_SCORE_LAYERS.get(model)


class BERTScoreF1(Metric):
    """Mean per-sample BERTScore F1 (0-1), no IDF weighting, no baseline rescaling.

    As the ``bert-score`` package computes it: each token of the prediction is
    matched to its most cosine-similar reference token (precision) and vice versa
    (recall), using hidden layer ``num_layers`` of the encoder ``model`` (name or
    local path; default: the package's layer for the model, ``BERT_SCORE_LAYERS``,
    else the last). [CLS] and [SEP] can be matched but carry no weight in the
    averages; padding takes no part. An empty side scores 0. With several
    references the best F1 is kept. Scores are computed in ``update`` and kept as
    a sum and a count, so DDP sums give the single-process mean and the model
    never sees ``compute``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        model: str | None = None,
        num_layers: int | None = None,
        max_length: int = 512,
        batch_size: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self._lm = LazyModel(require_model(model, "model", "BERTScoreF1", "encoder model"), head="encoder")
        self.num_layers = default_layer(model) if num_layers is None else num_layers
        self.max_length = max_length
        self.batch_size = batch_size
        self.add_state("f1_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def _embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit-norm token embeddings [B, L, D], the real (non-pad) tokens, and the weighted ones (not [CLS]/[SEP])."""
        tokenizer, model = self._lm.get(self.device)
        batch = tokenizer(
            [text.strip() for text in texts],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        hidden = model(**batch, output_hidden_states=True).hidden_states
        layer = hidden[-1 if self.num_layers is None else self.num_layers]
        real = batch["attention_mask"].bool()
        ids = batch["input_ids"]
        weighted = real & (ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id)
        return F.normalize(layer.float(), dim=-1), real, weighted

    def _pair_f1(self, predictions: list[str], references: list[str]) -> torch.Tensor:
        pred, pred_real, pred_weighted = self._embed(predictions)
        ref, ref_real, ref_weighted = self._embed(references)
        sim = torch.bmm(pred, ref.transpose(1, 2))  # cosine in [-1, 1]; -2 marks padding
        best_for_pred = sim.masked_fill(~ref_real[:, None, :], -2).max(dim=2).values
        best_for_ref = sim.masked_fill(~pred_real[:, :, None], -2).max(dim=1).values
        precision = (best_for_pred * pred_weighted).sum(1) / pred_weighted.sum(1).clamp(min=1)
        recall = (best_for_ref * ref_weighted).sum(1) / ref_weighted.sum(1).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall)
        valid = pred_weighted.any(1) & ref_weighted.any(1) & (precision + recall != 0)
        return torch.where(valid, f1, torch.zeros_like(f1))

    @torch.no_grad()
    def update(self, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> None:
        check_lengths(predictions=predictions, references=references)
        owners, pairs = [], []
        for i, (prediction, refs) in enumerate(zip(predictions, reference_lists(references))):
            owners += [i] * len(refs)
            pairs += [(prediction, ref) for ref in refs]
        if not pairs:
            return
        scores = torch.cat([self._pair_f1(*map(list, zip(*chunk))) for chunk in batched(pairs, self.batch_size)])
        best = torch.full((len(predictions),), -1.0, device=scores.device)
        best = best.scatter_reduce(0, torch.tensor(owners, device=scores.device), scores, reduce="amax")
        self.f1_sum += best.double().sum()
        self.count += len(predictions)

    def compute(self) -> torch.Tensor:
        return self.f1_sum / self.count.clamp(min=1)
