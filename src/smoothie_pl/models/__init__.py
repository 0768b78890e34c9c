"""The denoiser network: U-shaped transformer, time embedding, source encoder."""

from smoothie_pl.models.denoiser import DenoiserConfig, PretrainedSourceEncoder, SourceEncoder, UShapedDenoiser

__all__ = ["DenoiserConfig", "PretrainedSourceEncoder", "SourceEncoder", "UShapedDenoiser"]
