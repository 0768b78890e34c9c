"""Corpus BLEU-4 on a configurable tokenisation, and SacreBLEU (13a) for comparable numbers.

Both keep only additive sufficient statistics (clipped n-gram matches, n-gram totals,
hypothesis and reference lengths), so summing them across DDP ranks gives exactly the
single-process corpus score.
"""

import math
from collections import Counter
from collections.abc import Sequence

import torch
from sacrebleu.metrics import BLEU
from torchmetrics import Metric

from ._text import Tokenizer, check_lengths, ngram_counts, reference_lists, resolve_tokenizer

MAX_N = 4


def closest_length(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """Papineni's best-match reference length; ties go to the shorter reference."""
    return min(ref_lens, key=lambda ref_len: (abs(ref_len - hyp_len), ref_len))


def bleu_statistics(
    hypothesis: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[list[int], list[int], int, int]:
    """Clipped matches and totals for n = 1..4, hypothesis length and closest reference length."""
    matches, totals = [], []
    for n in range(1, MAX_N + 1):
        hyp = ngram_counts(hypothesis, n)
        max_ref: Counter = Counter()
        for reference in references:
            max_ref |= ngram_counts(reference, n)
        matches.append(sum(min(count, max_ref[gram]) for gram, count in hyp.items()))
        totals.append(max(len(hypothesis) - n + 1, 0))
    return matches, totals, len(hypothesis), closest_length(len(hypothesis), [len(r) for r in references])


def bleu_score(
    matches: Sequence[float], totals: Sequence[float], hyp_len: float, ref_len: float, epsilon: float = 0.0
) -> float:
    """BLEU-4 in [0, 1]: geometric mean of n-gram precisions times the brevity penalty.

    ``epsilon=0`` is unsmoothed BLEU (any order without a match gives 0). ``epsilon>0``
    is NLTK's smoothing ``method1``: a zero match count is replaced by ``epsilon``. As in
    NLTK, no unigram match at all scores 0 either way.
    """
    if hyp_len == 0 or matches[0] == 0:
        return 0.0
    log_precision = 0.0
    for match, total in zip(matches, totals):
        if match == 0:
            if epsilon == 0:
                return 0.0
            match = epsilon
        log_precision += math.log(match / max(total, 1)) / len(matches)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


class CorpusBLEU(Metric):
    """Corpus BLEU-4 (Papineni et al., 2002) on a 0-1 scale, without smoothing.

    Clipped n-gram precisions for n = 1..4 are pooled over the corpus, combined by their
    geometric mean and multiplied by the brevity penalty computed from the summed
    closest-reference lengths. One or several references per prediction.

    Tokenisation: ``tokenizer`` may be a callable, or the name/path of a Hugging Face
    tokenizer whose ``tokenize`` is used (e.g. multilingual BERT for WordPiece-level
    BLEU); by default texts are split on whitespace, case kept.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tokenizer: Tokenizer | str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._tokenize = resolve_tokenizer(tokenizer)
        self.add_state("matches", default=torch.zeros(MAX_N, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("totals", default=torch.zeros(MAX_N, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("hyp_len", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("ref_len", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> None:
        check_lengths(predictions=predictions, references=references)
        rows = []
        for prediction, refs in zip(predictions, reference_lists(references)):
            matches, totals, hyp_len, ref_len = bleu_statistics(
                self._tokenize(prediction), [self._tokenize(ref) for ref in refs]
            )
            rows.append([*matches, *totals, hyp_len, ref_len])
        if not rows:
            return
        summed = torch.tensor(rows, device=self.device).sum(dim=0)
        self.matches += summed[:MAX_N]
        self.totals += summed[MAX_N : 2 * MAX_N]
        self.hyp_len += summed[-2]
        self.ref_len += summed[-1]

    def compute(self) -> torch.Tensor:
        score = bleu_score(self.matches.tolist(), self.totals.tolist(), self.hyp_len.item(), self.ref_len.item())
        return torch.tensor(score, dtype=torch.float64)


class SacreBLEU(Metric):
    """SacreBLEU corpus BLEU on a 0-100 scale, computed by the ``sacrebleu`` package itself.

    Defaults are ``sacrebleu.corpus_bleu``'s: 13a tokenisation, case-sensitive, ``exp``
    smoothing, n = 1..4. So with one reference per prediction the value equals
    ``sacrebleu.corpus_bleu(predictions, [references]).score``. Several references per
    prediction are accepted when every prediction has the same number of them.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, tokenize: str = "13a", lowercase: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self._bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
        self.add_state("counts", default=torch.zeros(MAX_N, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("totals", default=torch.zeros(MAX_N, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("sys_len", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("ref_len", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> None:
        check_lengths(predictions=predictions, references=references)
        if not predictions:
            return
        refs = reference_lists(references)
        if len({len(r) for r in refs}) > 1:
            raise ValueError("SacreBLEU needs the same number of references for every prediction")
        stats = self._bleu.corpus_score(list(predictions), [list(stream) for stream in zip(*refs)])
        self.counts += torch.tensor(stats.counts, device=self.device)
        self.totals += torch.tensor(stats.totals, device=self.device)
        self.sys_len += stats.sys_len
        self.ref_len += stats.ref_len

    def compute(self) -> torch.Tensor:
        score = BLEU.compute_bleu(
            self.counts.tolist(),
            self.totals.tolist(),
            self.sys_len.item(),
            self.ref_len.item(),
            smooth_method=self._bleu.smooth_method,
        ).score
        return torch.tensor(score, dtype=torch.float64)
