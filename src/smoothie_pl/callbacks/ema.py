"""EMA of the weights with the paper's warm-up, on top of Lightning's EMAWeightAveraging."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import EMAWeightAveraging


def warmup_decay(decay: float, num_averaged: int) -> float:
    """``min(decay, (1 + n) / (10 + n))``: early averages forget the random initialisation quickly."""
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


class SmoothieEMA(EMAWeightAveraging):
    """EMA weights (paper: decay 0.9999 with a ``(1 + n) / (10 + n)`` warm-up).

    Lightning swaps them in for validation, writes them as the checkpoint's
    ``state_dict`` (so test, predict and ``generate`` from a checkpoint use
    them) and copies them into the model when training ends. Buffers are not
    averaged: the frozen embedding matrix and the vocabulary are constants.
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, update_every_n_steps: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema.decay must be in (0, 1), got {decay}")
        super().__init__(decay=decay, use_buffers=False, update_every_n_steps=update_every_n_steps)
        if warmup:
            self._kwargs.pop("avg_fn")
            self._kwargs["multi_avg_fn"] = self._update
        self.decay = decay

    def _update(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        weight = 1.0 - warmup_decay(self.decay, int(num_averaged))
        torch._foreach_lerp_(averaged, current, weight)
