"""Sources to generate for, without targets: one per line as plain text, or jsonl objects with a ``src`` field.

The format is told by the first line: a line starting with ``{`` makes the
whole input jsonl. Every line is one source, so the n-th output belongs to the
n-th line; an empty or malformed line is an error naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from smoothie_pl.errors import DataError, DataFileNotFoundError


def is_jsonl(first_line: str) -> bool:
    return first_line.lstrip("\ufeff \t").startswith("{")


def parse_jsonl_source(line: str, field: str = "src") -> str:
    """The source of one jsonl line; ``DataError`` says what is wrong with it."""
    try:
        record = json.loads(line.lstrip("\ufeff"))
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object with a {field!r} field, got {type(record).__name__}")
    if field not in record:
        raise DataError(f"missing field {field!r} (fields present: {sorted(record)})")
    if not isinstance(record[field], str) or not record[field].strip():
        raise DataError(f"field {field!r} must be a non-empty string, got {record[field]!r}")
    return record[field]


def read_sources(lines: Iterable[str], name: str, field: str = "src") -> list[str]:
    """Every line's source; ``name`` (a file or ``<stdin>``) and the line number start each error."""
    sources: list[str] = []
    jsonl = None
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if jsonl is None:
            jsonl = is_jsonl(line)
        if not line.strip():
            raise DataError(f"{name}:{number}: empty line (give one source per line)")
        try:
            sources.append(parse_jsonl_source(line, field) if jsonl else line.lstrip("\ufeff"))
        except DataError as err:
            raise DataError(f"{name}:{number}: {err}") from None
    if not sources:
        raise DataError(f"{name} holds no sources")
    return sources


def read_sources_file(path: str | Path, field: str = "src") -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(f"input file {path} does not exist")
    try:
        with path.open(encoding="utf-8") as lines:
            return read_sources(lines, str(path), field)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: invalid UTF-8 at byte {err.start}") from None
