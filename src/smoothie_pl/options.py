"""Checks of SmoothieModule's options that involve several of them (single ranges are in ``config_checks``)."""

from __future__ import annotations

from smoothie_pl.diffusion import SPACES
from smoothie_pl.models import DenoiserConfig
from smoothie_pl.precision import VOCAB_DTYPES

DTYPES = (*VOCAB_DTYPES, "auto")
"""The names ``vocab_dtype`` takes: a dtype, or ``"auto"`` for the fastest on the device."""


def check_model_options(
    space: str,
    token_head: str | None,
    vocab_attention: str,
    train_embeddings: bool,
    target_length: int,
    source_length: int,
    mbr_candidates: int,
    vocab_dtype: str,
    cfg_dropout: float,
    guidance_weight: float,
    denoiser: DenoiserConfig,
) -> None:
    """Raise ``ValueError`` naming the option when a combination cannot work."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {sorted(SPACES)}, got {space!r}")
    if token_head is not None and space != "simplex":
        raise ValueError(f"token_head is an option of the simplex space, got space={space!r}")
    if vocab_attention != "streaming" and space != "smoothie":
        raise ValueError(f"vocab_attention={vocab_attention!r} is an option of the smoothie space, got space={space!r}")
    if train_embeddings and space != "smoothie":
        # Its extra losses are written in Smoothie's distances (METHOD section 4).
        raise ValueError(f"train_embeddings needs space='smoothie', got space={space!r}")
    if target_length <= 0 or source_length <= 0:
        raise ValueError(f"target_length and source_length must be positive, got {target_length}, {source_length}")
    if mbr_candidates < 1:
        raise ValueError(f"mbr_candidates must be at least 1, got {mbr_candidates}")
    if vocab_dtype not in DTYPES:
        raise ValueError(f"vocab_dtype must be one of {sorted(DTYPES)}, got {vocab_dtype!r}")
    if not 0.0 <= cfg_dropout < 1.0:
        raise ValueError(f"cfg_dropout must be in [0, 1), got {cfg_dropout}")
    if cfg_dropout > 0 and denoiser.source_encoder == "none":
        raise ValueError("cfg_dropout drops the source, but denoiser.source_encoder is 'none' (unconditional)")
    if guidance_weight != 0 and cfg_dropout == 0:
        raise ValueError(
            f"guidance_weight {guidance_weight} needs a model trained with cfg_dropout > 0: "
            "without it the model has no unconditional prediction to guide away from"
        )
