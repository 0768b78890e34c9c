"""The diffusion math, in pure PyTorch (no Lightning import)."""

from smoothie_pl.diffusion.samplers import SAMPLERS, RenoiseSampler, build_sampler
from smoothie_pl.diffusion.schedules import ArctanSchedule
from smoothie_pl.diffusion.spaces import SmoothieSpace
from smoothie_pl.diffusion.vocab_attention import (
    VOCAB_ATTENTIONS,
    half_squared_norms,
    literal_vocab_attention,
    nearest_rows,
    noisy_vocab_attention,
)

__all__ = [
    "SAMPLERS",
    "VOCAB_ATTENTIONS",
    "ArctanSchedule",
    "RenoiseSampler",
    "SmoothieSpace",
    "build_sampler",
    "half_squared_norms",
    "literal_vocab_attention",
    "nearest_rows",
    "noisy_vocab_attention",
]
