"""SARI for text simplification (Xu et al., 2016, TACL, "Optimizing Statistical Machine
Translation for Text Simplification"), written from the paper's definition and its
reference script (cocoxu/simplification ``SARI.py``)."""

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import torch
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from torchmetrics import Metric

from ._text import Tokenizer, check_lengths, ngram_counts, reference_lists

Variant = Literal["xu2016", "evaluate"]
_13A = Tokenizer13a()


def lowercase_13a(text: str) -> list[str]:
    """Lowercase, then sacrebleu's 13a tokenisation: the normalisation of EASSE and ``evaluate``."""
    return _13A(text.lower()).split()


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _mean(values: list[float], empty: float) -> float:
    return sum(values) / len(values) if values else empty


def sari_ngram(
    source: Counter, prediction: Counter, references: list[Counter], variant: Variant
) -> tuple[float, float, float]:
    """Keep F1, deletion precision and addition F1 for one n-gram order.

    Source and prediction counts are multiplied by the number of references so they can
    be compared with the counts pooled over all references.
    """
    empty = 0.0 if variant == "xu2016" else 1.0
    num_refs = len(references)
    src = Counter({gram: count * num_refs for gram, count in source.items()})
    pred = Counter({gram: count * num_refs for gram, count in prediction.items()})
    ref = sum(references, Counter())

    kept = src & pred
    kept_good = kept & ref
    keep_all = src & ref
    keep_precision = _mean([kept_good[g] / kept[g] for g in kept], empty)
    if variant == "xu2016":
        keep_recall = _mean([kept_good[g] / keep_all[g] for g in keep_all], empty)
    else:
        keep_recall = sum(kept_good.values()) / sum(keep_all.values()) if keep_all else empty

    deleted = src - pred
    deleted_good = deleted - ref
    delete_precision = _mean([deleted_good[g] / deleted[g] for g in deleted], empty)

    added = set(pred) - set(src)
    added_good = added & set(ref)
    add_all = set(ref) - set(src)
    add_precision = len(added_good) / len(added) if added else empty
    add_recall = len(added_good) / len(add_all) if add_all else empty

    return _f1(keep_precision, keep_recall), delete_precision, _f1(add_precision, add_recall)


def sentence_sari(
    source: list[str], prediction: list[str], references: list[list[str]], variant: Variant = "xu2016"
) -> float:
    """SARI of one tokenised sentence in [0, 1]: mean of keep, delete and add, each averaged over n = 1..4."""
    per_order = [
        sari_ngram(
            ngram_counts(source, n), ngram_counts(prediction, n), [ngram_counts(r, n) for r in references], variant
        )
        for n in range(1, 5)
    ]
    return sum(sum(scores) / 4 for scores in zip(*per_order)) / 3


class SARI(Metric):
    """Sentence-level SARI averaged over the corpus, on a 0-100 scale.

    Per n-gram order n = 1..4 (multiple references, counts pooled over references):
    keep and add are F1 of precision and recall, deletion is precision only; each is
    averaged over n and SARI is the mean of the three (Xu et al., 2016).

    ``variant="xu2016"`` (default) follows the original script: keep recall is the mean of
    per-n-gram ratios and 0/0 counts as 0. ``variant="evaluate"`` reproduces Hugging Face
    ``evaluate``'s ``sari`` (from tensor2tensor): keep recall pools counts and 0/0 counts
    as 1. Tokenisation: lowercase + 13a by default, or any callable ``tokenizer``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tokenizer: Tokenizer | None = None, variant: Variant = "xu2016", **kwargs) -> None:
        super().__init__(**kwargs)
        if variant not in ("xu2016", "evaluate"):
            raise ValueError(f"Unknown SARI variant {variant!r}; use 'xu2016' or 'evaluate'")
        self._tokenize = tokenizer or lowercase_13a
        self.variant = variant
        self.add_state("score_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(
        self,
        sources: Sequence[str],
        predictions: Sequence[str],
        references: Sequence[str] | Sequence[Sequence[str]],
    ) -> None:
        check_lengths(sources=sources, predictions=predictions, references=references)
        tok = self._tokenize
        self.score_sum += sum(
            sentence_sari(tok(source), tok(prediction), [tok(r) for r in refs], self.variant)
            for source, prediction, refs in zip(sources, predictions, reference_lists(references))
        )
        self.count += len(predictions)

    def compute(self) -> torch.Tensor:
        return 100 * self.score_sum / self.count.clamp(min=1)
