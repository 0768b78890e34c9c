"""What an option allows, written once for both places that check it.

``config_checks.RULES`` reads these rules before anything is built; an
``OptionGroup`` dataclass declares its fields' rules with ``ranged`` and
checks them itself when built, so the Python API refuses what the command
line refuses, with the same words.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from smoothie_pl.embeddings import saved_model_names


@dataclass(frozen=True)
class Allowed:
    """What an option allows: ``holds(value, lookup)`` with ``lookup(key)`` giving another option's value."""

    description: str
    holds: Callable[[Any, Callable[[str], Any]], bool]


def at_least(low: float) -> Allowed:
    return Allowed(f">= {low}", lambda value, _: value >= low)


def above(low: float) -> Allowed:
    return Allowed(f"> {low}", lambda value, _: value > low)


def fraction() -> Allowed:
    return Allowed("in [0, 1)", lambda value, _: 0 <= value < 1)


def one_of(choices: Iterable[str]) -> Allowed:
    choices = sorted(choices)
    return Allowed(f"one of {choices}", lambda value, _: value in choices)


def only_with(key: str, wanted: Callable[[Any], bool], needs: str, unset: Any) -> Allowed:
    """An option that must stay ``unset`` unless another ``key`` is as ``wanted`` (``needs`` says how)."""
    return Allowed(f"{unset!r} unless {key} {needs}", lambda value, lookup: value == unset or wanted(lookup(key)))


def local_or_hub_model() -> Allowed:
    """A name that looks like a path (``/``, ``./``, ``~``, or more than one ``/``) must exist, unless the
    checkpoint being tested holds its matrix; others are hub names."""

    def holds(value, _) -> bool:
        looks_like_path = value.startswith(("/", ".", "~")) or value.count("/") > 1
        return not looks_like_path or os.path.isdir(os.path.expanduser(value)) or value in saved_model_names()

    return Allowed("an existing local model folder or a Hugging Face model name", holds)


def each(allowed: Allowed) -> Allowed:
    return Allowed(f"each {allowed.description}", lambda values, lookup: all(allowed.holds(v, lookup) for v in values))


def ranged(default: Any, allowed: Allowed) -> Any:
    """A dataclass field with its rule; the rule may read only its own value (it is checked alone)."""
    return field(default=default, metadata={"allowed": allowed})


@dataclass(frozen=True)  # a dataclass too, or jsonargparse would take its subclasses for class_path/init_args classes
class OptionGroup:
    """Base of a dataclass of options (an argument of ``SmoothieModule``) that checks its ``ranged`` fields."""

    argument: ClassVar[str]  # its name in ``SmoothieModule``, and in yaml under ``model:``

    def __post_init__(self) -> None:
        for key, allowed in self.rules().items():
            value = getattr(self, key)
            if value is not None and not allowed.holds(value, None):
                raise ValueError(f"{self.argument}.{key} = {value!r}: allowed {allowed.description}")

    @classmethod
    def rules(cls) -> dict[str, Allowed]:
        return {f.name: f.metadata["allowed"] for f in fields(cls) if "allowed" in f.metadata}
