"""BERTScore F1 (Zhang et al., 2020) by greedy cosine matching of contextual token embeddings."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from ._hf import LazyModel, batched, require_model
from ._text import check_lengths, reference_lists


class BERTScoreF1(Metric):
    """Mean per-sample BERTScore F1 (0-1), no IDF weighting, no baseline rescaling.

    Each token of the prediction is matched to its most cosine-similar reference token
    (precision) and vice versa (recall), using hidden layer ``num_layers`` of the
    encoder ``model`` (name or local path; default: its last layer). Special tokens
    ([CLS], [SEP], ...) are ignored; an empty side scores 0. With several references the
    best F1 is kept. Scores are computed in ``update`` and kept as a sum and a count, so
    DDP sums give the single-process mean and the model never sees ``compute``.
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
        self.num_layers = num_layers
        self.max_length = max_length
        self.batch_size = batch_size
        self.add_state("f1_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def _embed(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm token embeddings [B, L, D] and a mask of the non-special, non-pad tokens."""
        tokenizer, model = self._lm.get(self.device)
        batch = tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        ).to(self.device)
        special = batch.pop("special_tokens_mask").bool()
        hidden = model(**batch, output_hidden_states=True).hidden_states
        layer = hidden[-1 if self.num_layers is None else self.num_layers]
        return F.normalize(layer.float(), dim=-1), batch["attention_mask"].bool() & ~special

    def _pair_f1(self, predictions: list[str], references: list[str]) -> torch.Tensor:
        pred, pred_mask = self._embed(predictions)
        ref, ref_mask = self._embed(references)
        sim = torch.bmm(pred, ref.transpose(1, 2))  # cosine in [-1, 1]; -2 marks an excluded token
        best_for_pred = sim.masked_fill(~ref_mask[:, None, :], -2).max(dim=2).values
        best_for_ref = sim.masked_fill(~pred_mask[:, :, None], -2).max(dim=1).values
        precision = (best_for_pred * pred_mask).sum(1) / pred_mask.sum(1).clamp(min=1)
        recall = (best_for_ref * ref_mask).sum(1) / ref_mask.sum(1).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall)
        valid = pred_mask.any(1) & ref_mask.any(1) & (precision + recall != 0)
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
