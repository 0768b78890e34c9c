"""Noise schedules: pure functions of the diffusion time ``t`` in [0, 1].

A schedule returns ``(mu, std)`` such that the noised state is
``mu * clean + std * noise``; ``prior_std`` is the std of the state at t = 1.
Every schedule here is variance-preserving up to the scale ``prior_std``
(``std = prior_std * sqrt(1 - mu^2)``), so one ``beta(t) = -2 d log mu / dt``
drives the SDE sampler for all of them. Times are clamped to
``[T_MIN, T_MAX]`` so that no schedule reaches an infinite SNR or ``beta``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch

T_MIN = 5e-4
T_MAX = 0.9995


class Schedule:
    """The contract: ``marginal(t) -> (mu, std)``, ``prior_std``, ``beta(t)``.

    Subclasses define ``mu(t)`` on clamped float64 times and ``prior_std``.
    """

    name: ClassVar[str]

    @property
    def prior_std(self) -> float:
        raise NotImplementedError

    def mu(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def marginal(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.mu(t.double().clamp(T_MIN, T_MAX))
        std = self.prior_std * torch.sqrt(1.0 - mu.pow(2))
        return mu.to(t.dtype), std.to(t.dtype)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """``-2 d log mu / dt`` at the clamped times (the drift and diffusion rate of the SDE)."""
        with torch.enable_grad():
            clamped = t.detach().double().clamp(T_MIN, T_MAX).requires_grad_(True)
            (slope,) = torch.autograd.grad(self.mu(clamped).log().sum(), clamped)
        return (-2.0 * slope).to(t.dtype)

    def to_dict(self) -> dict:
        """Plain hyperparameters, ``name`` first (how checkpoints store the schedule)."""
        return {"name": self.name, **asdict(self)}


def _require_positive(schedule: Schedule, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise ValueError(f"{type(schedule).__name__} needs {key} > 0, got {key}={value}")


@dataclass(frozen=True)
class ArctanSchedule(Schedule):
    """Smoothie's schedule (METHOD section 3): the Gaussian kernel widens from
    ``sigma_min`` to about ``sigma_max`` following an arctan of the SNR-like
    ratio ``sqrt(t / (1 - t)) / k``; ``delta`` scales the noise and the prior."""

    name: ClassVar[str] = "arctan"
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
        _require_positive(self, k=self.k, delta=self.delta)

    @property
    def prior_std(self) -> float:
        return self.delta

    def sigma_bar(self, t: torch.Tensor) -> torch.Tensor:
        """Kernel width relative to ``sigma_min`` (1 at t = 0)."""
        t = t.clamp(T_MIN, T_MAX)
        ratio = self.sigma_max / self.sigma_min - 1.0
        return 1.0 + ratio * (2.0 / math.pi) * torch.atan(torch.sqrt(t / (1.0 - t)) / self.k)

    def mu(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_bar(t).pow(-2)


@dataclass(frozen=True)
class SdSchedule(Schedule):
    """The Gaussian embedding space's "sd" schedule: ``mu = 1 / sqrt(1 + k^2 tan^2(pi t / 2))``."""

    name: ClassVar[str] = "sd"
    k: float = 9.0

    def __post_init__(self) -> None:
        _require_positive(self, k=self.k)

    @property
    def prior_std(self) -> float:
        return 1.0

    def mu(self, t: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(1.0 + (self.k * torch.tan(math.pi * t / 2)).pow(2))


@dataclass(frozen=True)
class TessSchedule(Schedule):
    """TESS's cosine schedule for the simplex: ``alpha_bar = cos^2(((t + s) / (1 + s)) pi / 2) / alpha_bar(0)``,
    ``mu = sqrt(alpha_bar)``; the noise and the prior are scaled by the simplex value ``scale`` (K)."""

    name: ClassVar[str] = "tess"
    scale: float = 5.0
    offset: float = 1e-4

    def __post_init__(self) -> None:
        _require_positive(self, scale=self.scale, offset=self.offset)

    @property
    def prior_std(self) -> float:
        return self.scale

    def _cos_squared(self, t: torch.Tensor | float) -> torch.Tensor:
        angle = (torch.as_tensor(t, dtype=torch.float64) + self.offset) / (1 + self.offset) * (math.pi / 2)
        return torch.cos(angle).pow(2)

    def mu(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self._cos_squared(t) / self._cos_squared(0.0))


@dataclass(frozen=True)
class CosineSchedule(Schedule):
    """The reference code's VP "cosine" schedule, in fact linear ``beta`` from ``beta_0`` to ``beta_1``:
    ``log mu = -t^2 (beta_1 - beta_0) / 4 - t beta_0 / 2``."""

    name: ClassVar[str] = "cosine"
    beta_0: float = 0.1
    beta_1: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.beta_0 <= self.beta_1:
            raise ValueError(f"CosineSchedule needs 0 < beta_0 <= beta_1, got {self.beta_0}, {self.beta_1}")

    @property
    def prior_std(self) -> float:
        return 1.0

    def mu(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.25 * t.pow(2) * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0)


@dataclass(frozen=True)
class SqrtSchedule(Schedule):
    """Diffusion-LM's "sqrt" schedule: ``alpha = 1 - sqrt(t + offset)``, ``mu = sqrt(alpha)``."""

    name: ClassVar[str] = "sqrt"
    offset: float = 1e-4

    def __post_init__(self) -> None:
        if not 0 < self.offset < 1 - T_MAX:
            raise ValueError(f"SqrtSchedule needs 0 < offset < {1 - T_MAX:g} (alpha > 0), got {self.offset}")

    @property
    def prior_std(self) -> float:
        return 1.0

    def mu(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.sqrt(t + self.offset))


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (ArctanSchedule, SdSchedule, TessSchedule, CosineSchedule, SqrtSchedule)
}


def _as_float(key: str, value) -> float:
    """Every schedule parameter is a number; the command line hands dict entries over as strings."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"schedule.{key}: expected a number, got {value!r}") from None


def build_schedule(spec: Schedule | dict | None, default: str) -> Schedule:
    """A schedule from an object, or from ``{name: ..., **parameters}``; without ``name``, ``default``.

    ``default`` is the space's own schedule, so ``{sigma_max: 100}`` adjusts Smoothie's arctan one.
    """
    if isinstance(spec, Schedule):
        return spec
    params = dict(spec or {})
    name = params.pop("name", default)
    if name not in SCHEDULES:
        raise ValueError(f"schedule.name: unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    params = {key: _as_float(key, value) for key, value in params.items()}
    try:
        return SCHEDULES[name](**params)
    except TypeError as error:
        raise ValueError(f"schedule {name!r}: {error}") from None
