"""ROUGE F-measures from Google's ``rouge_score`` package, averaged over samples."""

from collections.abc import Sequence

import torch
from rouge_score import rouge_scorer
from torchmetrics import Metric

from ._text import check_lengths, reference_lists


class ROUGE(Metric):
    """Mean per-sample ROUGE F-measure (0-1) for each of ``rouge_types``.

    Scores come from ``rouge_score.rouge_scorer.RougeScorer`` with its default tokeniser
    (lowercase, non-alphanumerics dropped) and Porter stemming; ``rougeL`` is the
    sentence-level LCS variant (not ``rougeLsum``). With several references the best
    F-measure per type is taken (``score_multi``). The state is the sum of per-sample
    scores and the sample count, so DDP sums give the single-process mean.
    ``compute`` returns ``{rouge_type: score}``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self, rouge_types: Sequence[str] = ("rouge1", "rouge2", "rougeL"), use_stemmer: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.rouge_types = list(rouge_types)
        self._scorer = rouge_scorer.RougeScorer(self.rouge_types, use_stemmer=use_stemmer)
        self.add_state("f_sum", default=torch.zeros(len(self.rouge_types), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> None:
        check_lengths(predictions=predictions, references=references)
        sums = [0.0] * len(self.rouge_types)
        for prediction, refs in zip(predictions, reference_lists(references)):
            scores = self._scorer.score_multi(refs, prediction)
            sums = [total + scores[t].fmeasure for total, t in zip(sums, self.rouge_types)]
        self.f_sum += torch.tensor(sums, dtype=torch.float64, device=self.device)
        self.count += len(predictions)

    def compute(self) -> dict[str, torch.Tensor]:
        means = self.f_sum / self.count.clamp(min=1)
        return dict(zip(self.rouge_types, means))
