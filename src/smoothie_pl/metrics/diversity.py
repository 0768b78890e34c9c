"""Reference-free statistics of generated text: distinct-n, corpus diversity, Self-BLEU, length.

All use whitespace word tokens (Self-BLEU: configurable, like :class:`CorpusBLEU`).
"""

import bisect
from collections import Counter
from collections.abc import Sequence

import torch
from torchmetrics import Metric

from ._corpus import CorpusTextMetric
from ._text import Tokenizer, ngram_counts, ngrams, resolve_tokenizer, whitespace_tokenize
from .bleu import MAX_N, bleu_score, closest_length


class DistinctN(Metric):
    """div-n: distinct n-grams / total n-grams within each text, averaged over texts (0-1).

    Word-level on whitespace tokens. Texts shorter than ``n`` words have no n-grams and
    are left out of the average (0 if no text has any).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, n: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n = n
        self.add_state("ratio_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str]) -> None:
        ratios = []
        for prediction in predictions:
            grams = ngrams(whitespace_tokenize(prediction), self.n)
            if grams:
                ratios.append(len(set(grams)) / len(grams))
        self.ratio_sum += sum(ratios)
        self.count += len(ratios)

    def compute(self) -> torch.Tensor:
        return self.ratio_sum / self.count.clamp(min=1)


class Diversity(CorpusTextMetric):
    """Corpus diversity = prod_{n=2..4} (1 - rep_n), rep_n = 1 - |unique n-grams| / |n-grams| (0-1).

    The n-gram set and count are pooled over the whole corpus of predictions (whitespace
    words), so repeating a phrase across texts lowers the score; SimCTG's script instead
    sums per-text unique counts. Needs all texts at ``compute``; see ``_corpus`` for how
    they are kept under DDP. 0 when some order has no n-gram at all.
    """

    higher_is_better = True

    def update(self, predictions: Sequence[str]) -> None:
        self._store(predictions)

    def compute(self) -> torch.Tensor:
        token_lists = [whitespace_tokenize(text) for text in self._texts()]
        score = 1.0
        for n in range(2, 5):
            grams = [gram for tokens in token_lists for gram in ngrams(tokens, n)]
            score *= len(set(grams)) / len(grams) if grams else 0.0
        return torch.tensor(score, dtype=torch.float64)


def _other_length(length: int, length_counts: Counter, distinct: list[int]) -> int:
    """Closest length (ties: shorter) among all texts but one text of length ``length``."""
    if length_counts[length] > 1:
        return length
    i = bisect.bisect_left(distinct, length)
    neighbours = [distinct[j] for j in (i - 1, i + 1) if 0 <= j < len(distinct)]
    return closest_length(length, neighbours)


def self_bleu(token_lists: list[list[str]], epsilon: float) -> float:
    """Mean sentence BLEU-4 of each text with all the other texts as its references.

    Clipping needs, per n-gram, the largest count in any *other* text: keeping the best
    and second-best count (and who holds the best) makes this O(corpus) instead of O(N^2).
    """
    if len(token_lists) < 2:
        return 0.0
    counts = [[ngram_counts(tokens, n) for n in range(1, MAX_N + 1)] for tokens in token_lists]
    tops: list[dict] = [{} for _ in range(MAX_N)]
    for i, per_order in enumerate(counts):
        for top, grams in zip(tops, per_order):
            for gram, count in grams.items():
                best, holder, second = top.get(gram, (0, -1, 0))
                if count > best:
                    top[gram] = (count, i, best)
                elif count > second:
                    top[gram] = (best, holder, count)
    length_counts = Counter(len(tokens) for tokens in token_lists)
    distinct = sorted(length_counts)
    total = 0.0
    for i, (tokens, per_order) in enumerate(zip(token_lists, counts)):
        matches = []
        for top, grams in zip(tops, per_order):
            others_max = {g: top[g][2] if top[g][1] == i else top[g][0] for g in grams}
            matches.append(sum(min(count, others_max[g]) for g, count in grams.items()))
        totals = [max(len(tokens) - n + 1, 0) for n in range(1, MAX_N + 1)]
        ref_len = _other_length(len(tokens), length_counts, distinct)
        total += bleu_score(matches, totals, len(tokens), ref_len, epsilon)
    return total / len(token_lists)


class SelfBLEU(CorpusTextMetric):
    """Self-BLEU (Zhu et al., 2018): mean sentence BLEU-4 of each prediction against all others (0-1).

    Sentence BLEU uses NLTK ``method1`` smoothing with ``epsilon`` (0.1, as in Texygen),
    closest-length brevity penalty, and the tokenisation of :class:`CorpusBLEU`
    (whitespace by default). Lower means more diverse. 0 for fewer than two texts.
    """

    higher_is_better = False

    def __init__(self, tokenizer: Tokenizer | str | None = None, epsilon: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self._tokenize = resolve_tokenizer(tokenizer)
        self.epsilon = epsilon

    def update(self, predictions: Sequence[str]) -> None:
        self._store(predictions)

    def compute(self) -> torch.Tensor:
        score = self_bleu([self._tokenize(text) for text in self._texts()], self.epsilon)
        return torch.tensor(score, dtype=torch.float64)


class MeanLength(Metric):
    """Mean number of whitespace words per prediction."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("words", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str]) -> None:
        self.words += sum(len(whitespace_tokenize(p)) for p in predictions)
        self.count += len(predictions)

    def compute(self) -> torch.Tensor:
        return self.words.double() / self.count.clamp(min=1)
