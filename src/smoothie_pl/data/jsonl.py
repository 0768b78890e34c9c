"""Users' own data: one ``{"src": ..., "trg": ...}`` JSON object per line, one file per split.

The file ``predict`` reads may hold sources only: jsonl without ``trg``, or
plain text with one source per line (``data.inference``).
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from smoothie_pl.data.base import Pair, Seq2SeqDataModule
from smoothie_pl.data.inference import is_jsonl, read_sources_file
from smoothie_pl.errors import DataError, DataFileNotFoundError

SHOWN_BAD_LINES = 5


def without_duplicate_keys(items: list[tuple[str, object]]) -> dict:
    """A JSON object's dict; a key given twice is an error (``json`` would silently keep the last value)."""
    record = {}
    for key, value in items:
        if key in record:
            raise DataError(f"field {key!r} is given twice in one object")
        record[key] = value
    return record


def parse_pair(raw: bytes, source_field: str, target_field: str, target_required: bool = True) -> Pair | None:
    """The pair on one raw line (``None`` for a blank line); ``DataError`` says what is wrong with it.

    Without ``target_required`` a line may lack the target field (its pair's target is ``None``).
    """
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"invalid UTF-8 at byte {err.start} of the line") from None
    if not line.strip():
        return None
    try:
        record = json.loads(line.lstrip("\ufeff"), object_pairs_hook=without_duplicate_keys)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    texts = []
    for field in (source_field, target_field):
        if field == target_field and field not in record and not target_required:
            texts.append(None)
            continue
        if field not in record:
            raise DataError(f"missing field {field!r} (fields present: {sorted(record)})")
        if not isinstance(record[field], str) or not record[field].strip():
            raise DataError(f"field {field!r} must be a non-empty string, got {record[field]!r}")
        texts.append(record[field])
    return Pair(*texts)


def read_jsonl_pairs(
    path: str | Path,
    source_field: str = "src",
    target_field: str = "trg",
    skip_bad_lines: bool = False,
    target_required: bool = True,
) -> list[Pair]:
    """Read pairs, naming the file, line and field of anything malformed.

    With ``skip_bad_lines`` malformed lines are dropped instead, and one warning
    gives their count and the first few line numbers. A file without any pair
    is an error either way.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data file {path} is a directory; give the path of a .jsonl file")
    if not path.is_file():
        raise DataFileNotFoundError(f"data file {path} does not exist")
    pairs, bad = [], []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                pair = parse_pair(raw, source_field, target_field, target_required)
            except DataError as err:
                if not skip_bad_lines:
                    raise DataError(f"{path}:{number}: {err}") from None
                bad.append((number, str(err)))
                continue
            if pair is not None:
                pairs.append(pair)
    if bad:
        shown = ", ".join(str(number) for number, _ in bad[:SHOWN_BAD_LINES])
        more = ", ..." if len(bad) > SHOWN_BAD_LINES else ""
        rank_zero_warn(
            f"{path}: skipped {len(bad)} bad line(s) (lines {shown}{more}; line {bad[0][0]}: {bad[0][1]})"
        )
    if not pairs:
        reason = f"all {len(bad)} non-blank lines are bad" if bad else "it is empty"
        raise DataError(f"data file {path} holds no {source_field!r}/{target_field!r} pairs: {reason}")
    return pairs


class JsonlDataModule(Seq2SeqDataModule):
    """Seq2seq pairs from jsonl files, one per split; ``predict`` reads the ``predict_split``'s.

    ``skip_bad_lines`` drops malformed lines (reported in one warning per file)
    instead of stopping at the first one. The predict split's file may hold
    sources only: jsonl lines without the target field, or plain text.
    """

    def __init__(
        self,
        train_file: str | None = None,
        validation_file: str | None = None,
        test_file: str | None = None,
        source_field: str = "src",
        target_field: str = "trg",
        skip_bad_lines: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.source_field = source_field
        self.target_field = target_field
        self.skip_bad_lines = skip_bad_lines

    def read_split(self, split: str) -> list[Pair]:
        if self.files[split] is None:
            raise DataError(f"no file given for the {split} split: set data.init_args.{split}_file")
        path = Path(self.files[split])
        if split != self.predict_split:
            return read_jsonl_pairs(path, self.source_field, self.target_field, self.skip_bad_lines)
        if path.is_file() and not is_jsonl(first_line(path)):
            return [Pair(source, None) for source in read_sources_file(path)]
        return read_jsonl_pairs(path, self.source_field, self.target_field, self.skip_bad_lines, target_required=False)


def first_line(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as lines:
        return next(lines, "")
