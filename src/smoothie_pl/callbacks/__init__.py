"""Callbacks: EMA weights with warm-up, jsonl prediction writer, generation metrics, learning curve, diagnostics,
non-finite guard; the checkpoint plugin every CLI run saves and loads with."""

from smoothie_pl.callbacks.diagnostics import Diagnostics
from smoothie_pl.callbacks.ema import SmoothieEMA
from smoothie_pl.callbacks.generation_metrics import GenerationMetrics
from smoothie_pl.callbacks.learning_curve import LearningCurve
from smoothie_pl.callbacks.nonfinite_guard import NonFiniteGuard
from smoothie_pl.callbacks.prediction_writer import JsonlPredictionWriter
from smoothie_pl.callbacks.verified_checkpoint_io import VerifiedCheckpointIO

__all__ = [
    "Diagnostics",
    "GenerationMetrics",
    "JsonlPredictionWriter",
    "LearningCurve",
    "NonFiniteGuard",
    "SmoothieEMA",
    "VerifiedCheckpointIO",
]
