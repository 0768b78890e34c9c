"""The bundled demo task: King James Version -> World English Bible, verse by verse.

Both texts ship with the ``pythonbible`` package (public domain), so the task
needs no network: 31,099 archaic -> modern English pairs, split once with a
fixed seed into 500 validation, 500 test and the rest for training, and cached
as jsonl files.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from smoothie_pl.data.jsonl import JsonlDataModule
from smoothie_pl.io import write_jsonl_atomically

_BRACKETS = re.compile(r"[\[\]]")
_APOSTROPHES = re.compile("[`’]")


def clean_verse(text: str) -> str:
    """Drop the editors' brackets (KJV italics) and unify apostrophes (WEB writes a backtick)."""
    return " ".join(_APOSTROPHES.sub("'", _BRACKETS.sub("", text)).split())


def bible_pairs(source_version: str = "KJV", target_version: str = "WEB") -> list[dict]:
    """Every verse present in both translations (``pythonbible`` version codes), in canonical order."""
    try:
        import pythonbible as bible
    except ImportError as err:
        extras = ",".join(sorted({source_version.lower(), target_version.lower()}))
        raise ImportError(f"the Bible tasks need `pip install 'pythonbible[{extras}]'`") from err
    source_bible = bible.get_bible(bible.Version(source_version), "plain_text_readers")
    target_bible = bible.get_bible(bible.Version(target_version), "plain_text_readers")
    pairs = []
    for verse in sorted(set(source_bible.get_verse_ids()) & set(target_bible.get_verse_ids())):
        source = clean_verse(source_bible.get_scripture(verse, verse))
        target = clean_verse(target_bible.get_scripture(verse, verse))
        if source and target:
            pairs.append({"verse": verse, "src": source, "trg": target})
    return pairs


def split_pairs(pairs: list[dict], validation_size: int, test_size: int, seed: int) -> dict[str, list[dict]]:
    """Shuffle once with ``seed``; the first pairs are validation, the next test, the rest training."""
    pairs = list(pairs)
    random.Random(seed).shuffle(pairs)
    held_out = validation_size + test_size
    return {"validation": pairs[:validation_size], "test": pairs[validation_size:held_out], "train": pairs[held_out:]}


class BibleDataModule(JsonlDataModule):
    """KJV -> WEB verse pairs, prepared into ``data_dir`` on first use."""

    def __init__(
        self, data_dir: str = "data/bible", validation_size: int = 500, test_size: int = 500, split_seed: int = 0, **kwargs
    ) -> None:
        self.data_dir = Path(data_dir)
        super().__init__(
            train_file=str(self.data_dir / "train.jsonl"),
            validation_file=str(self.data_dir / "validation.jsonl"),
            test_file=str(self.data_dir / "test.jsonl"),
            **kwargs,
        )
        self.validation_size = validation_size
        self.test_size = test_size
        self.split_seed = split_seed

    def prepare_data(self) -> None:
        if all(Path(file).is_file() for file in self.files.values()):
            return
        splits = split_pairs(bible_pairs(), self.validation_size, self.test_size, self.split_seed)
        for split, records in splits.items():
            write_jsonl_atomically(Path(self.files[split]), records)
