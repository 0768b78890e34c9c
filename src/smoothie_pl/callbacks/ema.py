"""EMA of the weights with the paper's warm-up, on Lightning's WeightAveraging."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_avg_fn


def warmup_decay(decay: float, num_averaged: int) -> float:
    """``min(decay, (1 + n) / (10 + n))``: early averages forget the random initialisation quickly."""
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


class SmoothieEMA(WeightAveraging):
    """EMA weights (paper: decay 0.9999 with a ``(1 + n) / (10 + n)`` warm-up).

    Lightning swaps them in for validation, writes them as the checkpoint's
    ``state_dict`` (so test, predict and ``generate`` from a checkpoint use
    them) and copies them into the model when training ends. Buffers are not
    averaged: the frozen embedding matrix and the vocabulary are constants.
    The averaging function goes to ``WeightAveraging`` as its public
    ``multi_avg_fn`` (or ``avg_fn``) argument, handed on to ``torch.optim.swa_utils.AveragedModel``.
    """

    def __init__(self, decay: float = 0.9999, warmup: bool = True, update_every_n_steps: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema.decay must be in (0, 1), got {decay}")
        if update_every_n_steps < 1:
            raise ValueError(f"ema.update_every_n_steps must be at least 1, got {update_every_n_steps}")
        average = {"multi_avg_fn": self._warmed_up_average} if warmup else {"avg_fn": get_ema_avg_fn(decay)}
        super().__init__(use_buffers=False, **average)
        self.decay = decay
        self.update_every_n_steps = update_every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every ``update_every_n_steps``-th optimizer step; never at an epoch's end."""
        return step_idx is not None and step_idx % self.update_every_n_steps == 0

    def _warmed_up_average(
        self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor
    ) -> None:
        weight = 1.0 - warmup_decay(self.decay, int(num_averaged))
        torch._foreach_lerp_(averaged, current, weight)
