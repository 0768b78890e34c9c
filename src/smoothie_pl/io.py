"""Atomic file writing: a reader never sees a half-written file, and a crash leaves the old one intact."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def atomic_writer(path: Path) -> Iterator[TextIO]:
    """A text file beside ``path`` that is renamed into place when the block ends without an exception."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8") as out:
            yield out
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_jsonl_atomically(path: Path, records: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically."""
    with atomic_writer(path) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_writer(path) as out:
        out.write(text)
