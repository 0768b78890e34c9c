"""Noise schedules: pure functions of the diffusion time ``t`` in [0, 1].

A schedule returns ``(mu, std)`` such that the noised state is
``mu * clean + std * noise``; ``prior_std`` is the std of the state at t = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

T_MIN = 5e-4
T_MAX = 0.9995


@dataclass(frozen=True)
class ArctanSchedule:
    """Smoothie's schedule (METHOD section 3): the Gaussian kernel widens from
    ``sigma_min`` to about ``sigma_max`` following an arctan of the SNR-like
    ratio ``sqrt(t / (1 - t)) / k``; ``delta`` scales the noise and the prior."""

    sigma_min: float = 1.5
    sigma_max: float = 200.0
    k: float = 9.0
    delta: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"ArctanSchedule needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}"
            )
        if self.k <= 0 or self.delta <= 0:
            raise ValueError(f"ArctanSchedule needs k > 0 and delta > 0, got k={self.k}, delta={self.delta}")

    @property
    def prior_std(self) -> float:
        return self.delta

    def sigma_bar(self, t: torch.Tensor) -> torch.Tensor:
        """Kernel width relative to ``sigma_min`` (1 at t = 0)."""
        t = t.clamp(T_MIN, T_MAX)
        ratio = self.sigma_max / self.sigma_min - 1.0
        return 1.0 + ratio * (2.0 / math.pi) * torch.atan(torch.sqrt(t / (1.0 - t)) / self.k)

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma_bar = self.sigma_bar(t.double())
        mu = sigma_bar.pow(-2)
        std = self.delta * torch.sqrt(1.0 - sigma_bar.pow(-4))
        return mu.to(t.dtype), std.to(t.dtype)
