"""Callbacks: EMA weights with warm-up, the jsonl prediction writer."""

from smoothie_pl.callbacks.ema import SmoothieEMA
from smoothie_pl.callbacks.prediction_writer import JsonlPredictionWriter

__all__ = ["JsonlPredictionWriter", "SmoothieEMA"]
