"""Text helpers shared by every metric: tokenisation, n-gram counting, reference shapes.

Kept in one place so BLEU, SARI, Self-BLEU, distinct-n and MBR count n-grams identically.
"""

from collections import Counter
from collections.abc import Callable, Sequence

Tokenizer = Callable[[str], list[str]]


def whitespace_tokenize(text: str) -> list[str]:
    """Split on runs of whitespace; the default word tokenisation of this package."""
    return text.split()


class PretrainedTokenize:
    """The ``tokenize`` of a Hugging Face tokenizer (name or path), loaded on first use.

    Building a metric (every config does, offline in the tests) then reads or
    downloads nothing; the tokenizer is needed only once texts are scored.
    """

    def __init__(self, name_or_path: str) -> None:
        self.name_or_path = name_or_path
        self._tokenize: Tokenizer | None = None

    def __call__(self, text: str) -> list[str]:
        if self._tokenize is None:
            from transformers import AutoTokenizer

            self._tokenize = AutoTokenizer.from_pretrained(self.name_or_path).tokenize
        return self._tokenize(text)


def resolve_tokenizer(tokenizer: Tokenizer | str | None) -> Tokenizer:
    """Turn ``None`` (whitespace), a callable, or a Hugging Face tokenizer name/path into a callable."""
    if tokenizer is None:
        return whitespace_tokenize
    if callable(tokenizer):
        return tokenizer
    return PretrainedTokenize(tokenizer)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous ``n``-grams of ``tokens`` in order (empty when the text is shorter than ``n``)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def ngram_counts(tokens: Sequence[str], n: int) -> Counter:
    """Multiset of the ``n``-grams of ``tokens``."""
    return Counter(ngrams(tokens, n))


def reference_lists(references: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """Accept one reference per prediction (``list[str]``) or several (``list[list[str]]``)."""
    return [[ref] if isinstance(ref, str) else list(ref) for ref in references]


def check_lengths(**sequences: Sequence) -> None:
    """Fail loudly instead of silently zipping mismatched batches."""
    lengths = {name: len(seq) for name, seq in sequences.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Batch sizes differ: {lengths}")
