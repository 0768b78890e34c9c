"""The diffusion math, in pure PyTorch (no Lightning import)."""

from smoothie_pl.diffusion.samplers import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    RenoiseSampler,
    SDESampler,
    build_sampler,
)
from smoothie_pl.diffusion.schedules import (
    SCHEDULES,
    ArctanSchedule,
    CosineSchedule,
    Schedule,
    SdSchedule,
    SqrtSchedule,
    TessSchedule,
    build_schedule,
)
from smoothie_pl.diffusion.spaces import SPACES, DiffusionSpace, GaussianEmbeddingSpace, SimplexSpace, SmoothieSpace
from smoothie_pl.diffusion.vocab_attention import (
    VOCAB_ATTENTIONS,
    half_squared_norms,
    literal_vocab_attention,
    nearest_rows,
    noisy_vocab_attention,
)

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "SPACES",
    "VOCAB_ATTENTIONS",
    "ArctanSchedule",
    "CosineSchedule",
    "DDIMSampler",
    "DDPMSampler",
    "DiffusionSpace",
    "GaussianEmbeddingSpace",
    "RenoiseSampler",
    "SDESampler",
    "Schedule",
    "SdSchedule",
    "SimplexSpace",
    "SmoothieSpace",
    "SqrtSchedule",
    "TessSchedule",
    "build_sampler",
    "build_schedule",
    "half_squared_norms",
    "literal_vocab_attention",
    "nearest_rows",
    "noisy_vocab_attention",
]
