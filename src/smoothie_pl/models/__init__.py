"""The denoiser network: U-shaped transformer, time embedding, source encoder."""

from smoothie_pl.models.denoiser import (
    DenoiserConfig,
    PretrainedSourceEncoder,
    SourceEncoder,
    UShapedDenoiser,
    build_source_encoder,
)
from smoothie_pl.models.null_source import NullSource

__all__ = ["DenoiserConfig", "NullSource", "PretrainedSourceEncoder", "SourceEncoder", "UShapedDenoiser", "build_source_encoder"]
