"""Turning decoded token ids back into text (METHOD section 4, decoding), and recasing."""

from __future__ import annotations

import re
from collections import ChainMap, Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby


def ids_to_text(tokenizer, ids: Sequence[int], collapse_repeats: bool = False) -> str:
    """Cut at the first end token (SEP/EOS), drop special and padding tokens, detokenise.

    ``collapse_repeats`` keeps one of each run of equal words ("his his his hand" -> "his hand"):
    positions decoded independently repeat a word that belongs at one of them.
    """
    end_ids = {i for i in (tokenizer.sep_token_id, tokenizer.eos_token_id) if i is not None}
    special = set(tokenizer.all_special_ids)
    kept = []
    for token in ids:
        if token in end_ids:
            break
        if token not in special:
            kept.append(token)
    if not splits_punctuation(tokenizer):
        kept = without_repeats(kept) if collapse_repeats else kept
        return tokenizer.decode(kept, clean_up_tokenization_spaces=True).strip()
    words: list[str] = []
    for token in tokenizer.convert_ids_to_tokens(kept):
        if token.startswith("##") and words:
            words[-1] += token[2:]  # a WordPiece continuation
        else:
            words.append(token)
    return join_words(without_repeats(words) if collapse_repeats else words)


def without_repeats(items: list) -> list:
    """The items with each run of equal neighbours cut to its first."""
    return [item for item, _ in groupby(items)]


PUNCTUATION_SPLITTERS = ("BertPreTokenizer", "Whitespace")


def splits_punctuation(tokenizer) -> bool:
    """Whether the tokenizer cut punctuation off words, losing the spaces (BERT's WordPiece, word-level)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and type(backend.pre_tokenizer).__name__ in PUNCTUATION_SPLITTERS


_CLOSES = set(".,;:!?)]}%")  # no space before
_OPENS = set("([{$")  # no space after
_JOINS = set("-/—")  # no space on either side: "Ben-hadad", "and/or", "sin—"
_CONTRACTIONS = {"s", "t", "ll", "re", "ve", "d", "m"}


def leading_special_tokens(tokenizer) -> int:
    """How many special tokens the tokenizer puts before a text's first token (1 for BERT's ``[CLS]``)."""
    token = tokenizer("a", add_special_tokens=False)["input_ids"][0]
    return tokenizer("a")["input_ids"].index(token)


def join_words(words: list[str]) -> str:
    """Join pre-tokenised words as English is written: "Ben-hadad", "Yahweh's", "said, \"Go.\"".

    Straight quotes open and close in turn; an apostrophe before a contraction
    ("'s", "'t") or after a plural ("brothers' houses") joins its word.
    """
    text, glue_next, double_open, single_open = "", True, False, False
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        glue_before, glue_after = False, False
        if word in _CLOSES:
            glue_before = True
        elif word in _OPENS:
            glue_after = True
        elif word in _JOINS:
            glue_before = glue_after = True
        elif word == '"':
            # After sentence punctuation a quote closes, even one opened in an earlier verse.
            closing = double_open or (text[-1:] in _CLOSES and not following[:1].isalnum())
            glue_before, glue_after, double_open = closing, not closing, not closing
        elif word == "'":
            if following in _CONTRACTIONS and text and text[-1].isalnum():
                glue_before = glue_after = True
            elif single_open or (text.endswith("s") and not single_open and not following[:1].isupper()):
                glue_before, single_open = True, False
            else:
                glue_after, single_open = True, True
        text += word if (glue_next or glue_before or not text) else " " + word
        glue_next = glue_after
    return text


_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")
# The first letter of a sentence or a quotation (the references capitalise both; a colon ends neither).
_OPENING_LETTER = re.compile(r"(?:^|[.!?]\s+|\s(?=[\"“‘']))[\"“‘'(\[]*([^\W\d_])")


def lowercases(tokenizer) -> bool:
    """Whether the tokenizer reads "The" as "the" (an uncased vocabulary: its output needs recasing)."""
    ids = [tokenizer(word, add_special_tokens=False)["input_ids"] for word in ("The", "the")]
    return ids[0] == ids[1]


def opens_sentence(text: str, position: int) -> bool:
    """Whether the word at ``position`` of ``text`` opens a sentence (capitalised there whatever it is)."""
    return not text[:position].strip() or _SENTENCE_END.search(text[:position]) is not None


def learn_casing(texts: Iterable[str], share: float = 0.8) -> dict[str, str]:
    """Each word's usual spelling in ``texts`` where that is not all lower case: {"yahweh": "Yahweh", "i": "I"}.

    Words opening a sentence are not counted; a spelling is usual when more
    than ``share`` of the word's other occurrences use it (0.7-0.9 recased the
    Bible validation predictions best, 0.5 slightly worse). Learned from the
    training targets, it restores capitals an uncased vocabulary loses where
    the source cannot tell them (a name the source spells otherwise, "I").
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    for text in texts:
        for match in _WORD.finditer(text):
            if not opens_sentence(text, match.start()):
                counts[match.group(0).lower()][match.group(0)] += 1
    casing = {}
    for word, spellings in counts.items():
        spelling, count = spellings.most_common(1)[0]
        if spelling != word and count > share * spellings.total():
            casing[word] = spelling
    return casing


def recase(text: str, source: str, casing: Mapping[str, str] | None = None) -> str:
    """Restore letter case lost by an uncased vocabulary, from the source first, then a learned ``casing``.

    Words that the source writes with capitals away from a sentence start
    (names: "Judah", "LORD") take the source's spelling, other words their
    spelling in ``casing`` (``learn_casing``); a possessive ("moses's") not
    spelled there follows its word. The first letter of each sentence and
    quotation is capitalised. Everything else stays as generated.
    """
    from_source: dict[str, str] = {}
    for match in _WORD.finditer(source):
        word = match.group(0)
        if word != word.lower() and not opens_sentence(source, match.start()):
            from_source.setdefault(word.lower(), word)
    spellings = ChainMap(from_source, casing or {})  # the source's first; the learned table is not copied
    recased = _WORD.sub(lambda match: spelled(match.group(0), spellings), text)
    return _OPENING_LETTER.sub(lambda match: match.group(0)[:-1] + match.group(1).upper(), recased)


def spelled(word: str, spellings: Mapping[str, str]) -> str:
    """``word`` as ``spellings`` writes it, or its stem's spelling before an apostrophe; else unchanged."""
    if word in spellings:
        return spellings[word]
    stem, apostrophe, ending = word.partition("'")
    return spellings[stem] + apostrophe + ending if apostrophe and stem in spellings else word
