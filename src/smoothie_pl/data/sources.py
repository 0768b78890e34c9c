"""Where a task's data comes from: split files a user already has, or the raw dataset.

Prepared split files in a data directory are used as they are:

- DiffuSeq jsonl, ``{"src": ..., "trg": ...}`` per line: ``train.jsonl``,
  ``valid.jsonl`` (or ``validation.jsonl``, ``dev.jsonl``), ``test.jsonl``;
- plain parallel text, one example per line: ``train.<source suffix>`` and
  ``train.<target suffix>`` (e.g. fairseq's ``train.de`` / ``train.en``).

Otherwise the raw dataset is loaded, from a ``save_to_disk`` folder or from the
Hugging Face hub through ``datasets``; the task then makes the paper's splits.
When nothing is found, the error lists every place that was looked at.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

from smoothie_pl.data.base import Pair
from smoothie_pl.data.jsonl import read_jsonl_pairs

SPLIT_STEMS = {"train": ("train",), "validation": ("valid", "validation", "dev"), "test": ("test",)}
OFFLINE_VARIABLES = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def split_candidates(data_dir: Path, split: str, suffixes: tuple[str, str]) -> list[Path | tuple[Path, Path]]:
    """The files that would hold ``split``, in the order they are tried."""
    candidates: list[Path | tuple[Path, Path]] = []
    for stem in SPLIT_STEMS[split]:
        candidates.append(data_dir / f"{stem}.jsonl")
        candidates.append((data_dir / f"{stem}.{suffixes[0]}", data_dir / f"{stem}.{suffixes[1]}"))
    return candidates


def _exists(candidate: Path | tuple[Path, Path]) -> bool:
    return all(path.is_file() for path in candidate) if isinstance(candidate, tuple) else candidate.is_file()


def describe(candidate: Path | tuple[Path, Path]) -> str:
    """A path, or ``a + b`` for a parallel pair (one path when both are the same file)."""
    if isinstance(candidate, tuple):
        return str(candidate[0]) if candidate[0] == candidate[1] else f"{candidate[0]} + {candidate[1]}"
    return str(candidate)


def find_split_file(data_dir: Path, split: str, suffixes: tuple[str, str]) -> Path | tuple[Path, Path] | None:
    return next((c for c in split_candidates(data_dir, split, suffixes) if _exists(c)), None)


def read_parallel_text(source_path: Path, target_path: Path) -> list[Pair]:
    """Line ``i`` of one file pairs with line ``i`` of the other; counts must agree."""
    sources = source_path.read_text(encoding="utf-8").splitlines()
    targets = target_path.read_text(encoding="utf-8").splitlines()
    if len(sources) != len(targets):
        raise ValueError(
            f"parallel files differ in length: {source_path} has {len(sources)} lines, {target_path} {len(targets)}"
        )
    for number, (source, target) in enumerate(zip(sources, targets), start=1):
        for path, text in ((source_path, source), (target_path, target)):
            if not text.strip():
                raise ValueError(f"{path}:{number}: empty line")
    return [Pair(source, target) for source, target in zip(sources, targets)]


def read_split_file(candidate: Path | tuple[Path, Path]) -> list[Pair]:
    if isinstance(candidate, tuple):
        return read_parallel_text(*candidate)
    return read_jsonl_pairs(candidate)


def load_raw_dataset(dataset: str | None, config: str | None, looked_at: list[str]):
    """A ``DatasetDict`` from a ``save_to_disk`` folder or the hub; ``None`` if neither.

    What was tried and why it failed is appended to ``looked_at``.
    """
    if dataset is None:
        return None
    import datasets

    if Path(dataset).expanduser().is_dir():
        return datasets.load_from_disk(str(Path(dataset).expanduser()))
    looked_at.append(f"a save_to_disk folder at {Path(dataset).expanduser()} (not a directory)")
    hub = f"the hub dataset {dataset!r}" + (f" (config {config!r})" if config else "")
    offline = [name for name in OFFLINE_VARIABLES if os.environ.get(name, "0").lower() in ("1", "true", "yes", "on")]
    if offline:
        looked_at.append(f"{hub}: not tried, {offline[0]} is set")
        return None
    try:
        return datasets.load_dataset(dataset, config)
    except Exception as err:  # noqa: BLE001 - any failure of the hub is reported with the local paths
        looked_at.append(f"{hub}: {type(err).__name__}: {err}")
        return None


def no_data_error(task: str, looked_at: Sequence[str]) -> FileNotFoundError:
    lines = "\n  ".join(looked_at)
    return FileNotFoundError(f"no data found for {task}; looked for:\n  {lines}")


def shuffled_split(items: list, fractions: tuple[float, float, float], seed: int) -> dict[str, list]:
    """Shuffle with ``random.Random(seed)``, then cut into train / validation / test.

    Validation and test get ``int(fraction * n)`` items each; train keeps the rest.
    """
    items = list(items)
    random.Random(seed).shuffle(items)
    validation = int(fractions[1] * len(items))
    test = int(fractions[2] * len(items))
    train = len(items) - validation - test
    return {
        "train": items[:train],
        "validation": items[train : train + validation],
        "test": items[train + validation :],
    }

