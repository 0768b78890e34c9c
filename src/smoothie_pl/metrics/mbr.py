"""Minimum Bayes Risk selection among several samples generated for the same source."""

from collections.abc import Callable, Sequence
from typing import Literal

from rouge_score import rouge_scorer

from ._text import whitespace_tokenize
from .bleu import bleu_score, bleu_statistics

Utility = Callable[[str, str], float]


def _bleu_utility(hypothesis: str, reference: str) -> float:
    """Sentence BLEU-4 on whitespace tokens, NLTK ``method1`` smoothing (short texts rarely share 4-grams)."""
    stats = bleu_statistics(whitespace_tokenize(hypothesis), [whitespace_tokenize(reference)])
    return bleu_score(*stats, epsilon=0.1)


def _rouge_l_utility() -> Utility:
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return lambda hypothesis, reference: scorer.score(reference, hypothesis)["rougeL"].fmeasure


def mbr_select(
    candidates: Sequence[Sequence[str]], utility: Literal["bleu", "rougeL"] | Utility = "bleu"
) -> list[int]:
    """For each source, the index of the candidate with the highest mean utility against the others.

    ``candidates[i]`` holds the k samples for source i. ``utility(hypothesis, reference)``
    is sentence BLEU (see ``_bleu_utility``), ROUGE-L F-measure with stemming, or any
    callable. Ties go to the lowest index; a single candidate is index 0.
    """
    if utility == "bleu":
        utility = _bleu_utility
    elif utility == "rougeL":
        utility = _rouge_l_utility()
    elif not callable(utility):
        raise ValueError(f"Unknown MBR utility {utility!r}; use 'bleu', 'rougeL' or a callable")
    chosen = []
    for samples in candidates:
        gains = [
            sum(utility(hyp, ref) for j, ref in enumerate(samples) if j != i) for i, hyp in enumerate(samples)
        ]
        chosen.append(max(range(len(samples)), key=lambda i: (gains[i], -i)))
    return chosen
