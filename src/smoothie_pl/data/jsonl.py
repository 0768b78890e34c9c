"""Users' own data: one ``{"src": ..., "trg": ...}`` JSON object per line, one file per split."""

from __future__ import annotations

import json
from pathlib import Path

from smoothie_pl.data.base import Pair, Seq2SeqDataModule


def read_jsonl_pairs(path: str | Path, source_field: str = "src", target_field: str = "trg") -> list[Pair]:
    """Read pairs, naming the file, line and field of anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    pairs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: malformed JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            texts = []
            for field in (source_field, target_field):
                if field not in record:
                    raise ValueError(f"{path}:{number}: missing field {field!r}")
                if not isinstance(record[field], str) or not record[field].strip():
                    raise ValueError(f"{path}:{number}: field {field!r} must be a non-empty string")
                texts.append(record[field])
            pairs.append(Pair(*texts))
    return pairs


class JsonlDataModule(Seq2SeqDataModule):
    """Seq2seq pairs from jsonl files; ``predict_file`` defaults to the predict split's file."""

    def __init__(
        self,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        source_field: str = "src",
        target_field: str = "trg",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.source_field = source_field
        self.target_field = target_field

    def read_split(self, split: str) -> list[Pair]:
        if self.files[split] is None:
            raise ValueError(f"no file given for the {split} split: set data.{split}_file")
        return read_jsonl_pairs(self.files[split], self.source_field, self.target_field)
