"""Atomic jsonl writing: a reader never sees a half-written file, and a crash leaves the old one intact."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


def write_jsonl_atomically(path: Path, records: Iterable[dict]) -> None:
    """Write one JSON object per line to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    with temporary.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(temporary, path)
