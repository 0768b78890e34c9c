"""Turning decoded token ids back into text (METHOD section 4, decoding)."""

from __future__ import annotations

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
