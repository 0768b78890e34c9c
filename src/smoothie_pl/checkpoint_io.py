"""Checkpoint files that are safe to open and known to be whole.

* Reading never unpickles code: every load asks torch for ``weights_only=True``
  itself, so neither torch's default nor ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
  decides whether a crafted file's payload runs.
* Every tensor of a checkpoint written here has its digest stored beside it
  (``checkpoint["smoothie_integrity"]``); loading recomputes them, so bytes
  changed on disk are found instead of loading as silent NaNs. The weights must
  also be finite. Files without digests (written by a plain Lightning
  ``Trainer``) are checked against the CRC-32 of every zip record instead.
* Writing goes to a temporary file beside the target, flushed to disk, then
  renamed over it: a killed or failing write (disk full) leaves the previous
  file as it was, and the temporary name never looks like a checkpoint.

``load_verified(path)`` is the one call for code that opens a checkpoint.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from smoothie_pl.errors import CheckpointError, CheckpointWriteError
from smoothie_pl.fingerprint import tensor_digest

INTEGRITY_KEY = "smoothie_integrity"
# Entries that hold weights, which must be finite: the model's (the average, under weight
# averaging) and the raw weights Lightning's WeightAveraging keeps beside it.
WEIGHT_ENTRIES = ("state_dict", "current_model_state")
TEMPORARY_SUFFIX = ".partial"


def named_tensors(value: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside nested dicts, lists and tuples, named by its path (``state_dict/denoiser.input.weight``)."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from named_tensors(item, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from named_tensors(item, f"{prefix}/{index}" if prefix else str(index))


def tensor_digests(checkpoint: Mapping[str, Any]) -> dict[str, str]:
    """The digest of every tensor of ``checkpoint`` (its own digest table left out)."""
    content = {key: value for key, value in checkpoint.items() if key != INTEGRITY_KEY}
    return {name: tensor_digest(tensor) for name, tensor in named_tensors(content)}


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``, read without running pickled code; ``CheckpointError`` if it cannot be read.

    Memory-mapped: tensors are read from disk when first used.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} cannot be read: it is not the zip archive torch.save writes")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"checkpoint {path} cannot be read (UnpicklingError): it holds objects other than tensors and plain "
            "data, which are never unpickled here because unpickling them can run code"
        ) from None
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for damaged files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: {first_line})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a checkpoint: it holds a {type(checkpoint).__name__}, not a dict")
    return checkpoint


def verify(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Raise ``CheckpointError`` naming ``path`` and the first tensor that is damaged or, among the weights, not finite."""
    stored = checkpoint.get(INTEGRITY_KEY)
    if stored is None:
        _verify_zip_records(path)
    elif not isinstance(stored, Mapping):
        raise CheckpointError(f"checkpoint {path} is damaged: its digest table is a {type(stored).__name__}")
    else:
        current = tensor_digests(checkpoint)
        for name in [*current, *(name for name in stored if name not in current)]:
            problem = (
                "not covered by the stored digests" if name not in stored
                else "missing" if name not in current
                else "does not match its stored digest" if current[name] != stored[name]
                else None
            )
            if problem:
                raise CheckpointError(f"checkpoint {path} is damaged: tensor {name} {problem}")
    for entry in WEIGHT_ENTRIES:
        for name, tensor in named_tensors(checkpoint.get(entry, {}), entry):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise CheckpointError(f"checkpoint {path} holds non-finite weights: the first is {name}")


def _verify_zip_records(path: str | os.PathLike) -> None:
    """The CRC-32 check of a checkpoint written without digests."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read ({error})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: record {bad} fails its CRC-32 check")


def load_verified(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, read safely and verified (``read_checkpoint`` then ``verify``)."""
    checkpoint = read_checkpoint(path, map_location)
    verify(checkpoint, path)
    return checkpoint


def temporary_path(path: Path) -> Path:
    """Where ``save_atomically`` writes ``path`` first: hidden, and not ending in ``.ckpt``."""
    return path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def save_atomically(checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    """Add the tensor digests to ``checkpoint`` and write it to ``path`` so that ``path`` is always whole.

    A failing write raises ``CheckpointWriteError``; the file at ``path`` is then untouched.
    """
    path = Path(path)
    checkpoint[INTEGRITY_KEY] = tensor_digests(checkpoint)
    temporary = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temporary.open("wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({error.strerror or error}); "
            "the file that was there before, if any, is unchanged"
        ) from error
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable (a crash right after it would otherwise be able to undo it)."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Delete what killed ``save_atomically`` calls left in ``directory``; returns the files removed."""
    removed = []
    for leftover in Path(directory).glob(f".*.ckpt.*{TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def newest_intact(paths: Iterable[str | os.PathLike], required: Iterable[str] = ()) -> Path | None:
    """The most recently written of ``paths`` that loads, verifies and has every ``required`` entry.

    Each newer file that fails is skipped with one warning naming it and why.
    """
    required = tuple(required)
    for path in sorted({Path(p) for p in paths}, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            checkpoint = load_verified(path)
        except CheckpointError as error:
            warnings.warn(f"skipping checkpoint {path}: {error}", stacklevel=2)
            continue
        missing = [key for key in required if key not in checkpoint]
        if missing:
            warnings.warn(f"skipping checkpoint {path}: it is not one of this run's (no {', '.join(missing)})", stacklevel=2)
            continue
        return path
    return None
