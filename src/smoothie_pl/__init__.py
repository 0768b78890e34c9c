"""Smoothie text diffusion as PyTorch Lightning modules."""

from smoothie_pl.module import SmoothieModule

__all__ = ["SmoothieModule"]
__version__ = "0.1.0"
