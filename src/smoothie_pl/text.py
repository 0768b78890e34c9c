"""Turning decoded token ids back into text (METHOD section 4, decoding), and recasing."""

from __future__ import annotations

import re
from collections.abc import Sequence


def ids_to_text(tokenizer, ids: Sequence[int]) -> str:
    """Cut at the first end token (SEP/EOS), drop special and padding tokens, detokenise."""
    end_ids = {i for i in (tokenizer.sep_token_id, tokenizer.eos_token_id) if i is not None}
    special = set(tokenizer.all_special_ids)
    kept = []
    for token in ids:
        if token in end_ids:
            break
        if token not in special:
            kept.append(token)
    return tokenizer.decode(kept, clean_up_tokenization_spaces=True).strip()


_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$")


def recase_from_source(text: str, source: str) -> str:
    """Restore letter case lost by an uncased vocabulary, using the source as the guide.

    Words that the source writes with capitals away from a sentence start
    (names: "Judah", "LORD") take the source's spelling; the first letter of
    the text is capitalised. Everything else stays as generated.
    """
    casing: dict[str, str] = {}
    for match in _WORD.finditer(source):
        word = match.group(0)
        sentence_start = not source[: match.start()].strip() or _SENTENCE_END.search(source[: match.start()])
        if not sentence_start and word != word.lower():
            casing.setdefault(word.lower(), word)
    recased = _WORD.sub(lambda match: casing.get(match.group(0), match.group(0)), text)
    return recased[:1].upper() + recased[1:]
