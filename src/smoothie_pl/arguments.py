"""Checks of what the Python API is given, so that a wrong argument is named instead of failing deep inside.

``options_of`` builds a config dataclass from a dict and names a misspelt key
with the closest real one (``unknown_keys``; the start-up checks also use
``wrong_types``); ``check_generate_arguments`` and ``warn_long_sources`` guard ``generate``.
"""

from __future__ import annotations

import difflib
import numbers
import typing
import warnings
from dataclasses import fields
from typing import Any


def closest(name: str, choices, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the choice nearest ``name``, or nothing when none is within ``cutoff``."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_keys(cls, keys) -> list[tuple[str, str]]:
    """``(key, " (did you mean ...?)")`` for each of ``keys`` that is not a field of the dataclass ``cls``."""
    names = [field.name for field in fields(cls)]
    return [(key, closest(key, names)) for key in keys if key not in names]


# Field types a value is checked against when a dataclass option comes as a dict (the parser checked none).
PLAIN_TYPES = {int: numbers.Integral, float: numbers.Real, str: str, bool: bool}


def wrong_types(cls, items) -> list[tuple[str, Any, str]]:
    """``(key, value, type name)`` for each ``(key, value)`` whose value is not of the field's plain type."""
    hints = typing.get_type_hints(cls)
    return [
        (key, value, hints[key].__name__)
        for key, value in items
        if hints.get(key) in PLAIN_TYPES and not isinstance(value, PLAIN_TYPES[hints[key]])
    ]


def options_of(cls, value, argument: str):
    """``value`` if it is a ``cls`` already, else ``cls(**value)``; a key ``cls`` lacks is a ``TypeError`` naming it."""
    if isinstance(value, cls):
        return value
    unknown = unknown_keys(cls, value)
    if unknown:
        raise TypeError(f"{argument} has no option " + ", ".join(f"{key!r}{hint}" for key, hint in unknown))
    return cls(**value)


def _positive_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def check_generate_arguments(
    sources: Any, steps: Any, seed: Any, batch_size: Any, candidates: Any, first_index: Any
) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first argument of ``generate`` that cannot work."""
    if isinstance(sources, str) or not isinstance(sources, (list, tuple)):
        raise TypeError(f"generate expects a list of source strings, got {type(sources).__name__}")
    for index, source in enumerate(sources):
        if not isinstance(source, str):
            raise TypeError(f"generate: sources[{index}] is {type(source).__name__} {source!r}, not a string")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("candidates", candidates)):
        if value is not None and not _positive_integer(value):
            raise ValueError(f"generate: {name} must be a positive integer (or None for the default), got {value!r}")
    for name, value in (("seed", seed), ("first_index", first_index)):
        if value is not None and not (isinstance(value, numbers.Integral) and value >= 0):
            raise ValueError(f"generate: {name} must be a non-negative integer, got {value!r}")


def warn_long_sources(tokenizer, sources: list[str], source_length: int) -> None:
    """One warning when sources are longer than ``source_length`` tokens: ``generate`` cuts them, as training did."""
    lengths = [len(ids) for ids in tokenizer(list(sources))["input_ids"]] if sources else []
    overlong = [index for index, length in enumerate(lengths) if length > source_length]
    if overlong:
        shown = ", ".join(str(index) for index in overlong[:5]) + (", ..." if len(overlong) > 5 else "")
        warnings.warn(
            f"generate: {len(overlong)} of {len(sources)} sources are longer than source_length={source_length} "
            f"tokens and are cut to it (sources {shown}; the longest has {max(lengths)} tokens)",
            stacklevel=3,
        )
