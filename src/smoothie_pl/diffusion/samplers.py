"""Samplers: a time grid and one ``step``, behind one contract, chosen by name.

Every sampler walks a time grid ``1 = t_0 > t_1 > ... > t_N = 0`` (uniform,
``t_k = 1 - k / N``, unless another ``TimeGrid`` is given), runs the model at
``t_0 .. t_{N-1}`` and returns the last prediction of ``e0``. The loop lives
once, in ``Sampler.sample``; a sampler says only where it starts
(``initial_state``), what the model sees of its state (``model_input``) and
how the state moves from ``t_k`` to ``t_{k+1}`` given the prediction (``step``).

The re-noise sampler (the paper's) keeps only the model input: each step needs
the prediction and fresh noise, so the space streams it. DDIM, DDPM and SDE
keep the full state between steps (``[B, L, V]`` for Smoothie and the
simplex): fine for ablations at demo sizes, not for a 30k vocabulary at batch 256.

``noise_scale`` multiplies the std of the noise a sampler injects (1 is the
sampler as published; lower trades diversity for fluency). DDIM injects none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from smoothie_pl.diffusion.schedules import Schedule
from smoothie_pl.diffusion.spaces import DiffusionSpace, zero_outside

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(model input [B, L, d], t [B]) -> predicted clean embeddings [B, L, d]``."""

StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
"""``(k, t [B], model input x [B, L, d], prediction e0 [B, L, d]) -> None``, after every model evaluation.

It sees the loop as it runs (to record or draw a sample forming); it must not
change the tensors it is given.
"""


class TimeGrid:
    """The times a sampler visits: ``N + 1`` decreasing values from 1 to 0."""

    name: ClassVar[str]

    def __call__(self, steps: int, device: torch.device | None = None) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class UniformGrid(TimeGrid):
    """``t_k = 1 - k / N`` (METHOD section 4)."""

    name: ClassVar[str] = "uniform"

    def __call__(self, steps: int, device: torch.device | None = None) -> torch.Tensor:
        return 1.0 - torch.arange(steps + 1, device=device, dtype=torch.float32) / steps


@dataclass(frozen=True)
class PowerGrid(TimeGrid):
    """``t_k = (1 - k / N) ** power``: with ``power > 1`` more of a few steps fall at small t.

    Smoothie's input holds the target only below about t = 0.1 (the true token's
    share of ``softmax(D_t)`` is 0.93 at t = 0.05, 0.03 at t = 0.2); five uniform
    steps end at t = 0.2, while ``power = 3`` visits 1, 0.51, 0.22, 0.06, 0.008.
    ``power = 1`` is the uniform grid.
    """

    power: float = 2.0
    name: ClassVar[str] = "power"

    def __post_init__(self) -> None:
        if self.power <= 0:
            raise ValueError(f"time grid power must be positive, got {self.power}")

    def __call__(self, steps: int, device: torch.device | None = None) -> torch.Tensor:
        return UniformGrid()(steps, device).pow(self.power)


TIME_GRIDS: dict[str, type[TimeGrid]] = {UniformGrid.name: UniformGrid, PowerGrid.name: PowerGrid}


def build_time_grid(spec: TimeGrid | str, **options) -> TimeGrid:
    """A grid by name (``"uniform"``, ``"power"``) with its options (``power=3``), or a ``TimeGrid`` as given."""
    if isinstance(spec, TimeGrid):
        return spec
    if spec not in TIME_GRIDS:
        raise ValueError(f"unknown time grid {spec!r}; choose one of {sorted(TIME_GRIDS)}")
    return TIME_GRIDS[spec](**options)


class Sampler:
    """The grid and the one loop; subclasses define ``initial_state``, ``model_input`` and ``step``."""

    def __init__(self, steps: int = 200, noise_scale: float = 1.0, grid: TimeGrid | str = "uniform") -> None:
        if steps <= 0:
            raise ValueError(f"sampler steps must be a positive integer, got {steps}")
        if noise_scale < 0:
            raise ValueError(f"sampler noise_scale must be non-negative, got {noise_scale}")
        self.steps = steps
        self.noise_scale = noise_scale
        self.grid = build_time_grid(grid)

    def timesteps(self, device: torch.device | None = None) -> torch.Tensor:
        return self.grid(self.steps, device)

    def initial_state(
        self,
        space: DiffusionSpace,
        batch: int,
        length: int,
        generator: torch.Generator | None,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The state at ``t = 1``."""
        raise NotImplementedError

    def model_input(self, space: DiffusionSpace, state: torch.Tensor) -> torch.Tensor:
        """What the denoiser sees of the state, ``[B, L, d]``."""
        raise NotImplementedError

    def step(
        self,
        space: DiffusionSpace,
        state: torch.Tensor,
        predicted: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        generator: torch.Generator | None,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The state at ``t_next [B]`` from the state at ``t [B]`` and the predicted clean embeddings."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        space: DiffusionSpace,
        denoise: Denoise,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
        callback: StepCallback | None = None,
        live: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The last prediction ``[B, L, d]``; ``callback(k, t, x, e0)`` follows every model evaluation.

        ``live [B, L]`` (``None``: all): the positions modelled. The model input is zero at
        the others, and the re-noise sampler draws nothing for them (a sampler carrying the
        full state still updates all of it).
        """
        state = self.initial_state(space, batch, length, generator, live)
        grid = self.timesteps(device or state.device)
        for k in range(self.steps):
            t = grid[k].expand(batch)
            x = zero_outside(self.model_input(space, state), live)
            predicted = denoise(x, t)
            if callback is not None:
                callback(k, t, x, predicted)
            if k + 1 < self.steps:
                state = self.step(space, state, predicted, t, grid[k + 1].expand(batch), generator, live)
        return predicted


class RenoiseSampler(Sampler):
    """The paper's sampler: predict ``e0``, then draw the marginal at the next time afresh.

    Its state is the model input itself: each step needs only ``e0`` and fresh
    noise, so the space can stream it without holding the ``[B, L, V]`` state.
    """

    def initial_state(self, space, batch, length, generator, live=None):
        return space.prior_input(batch, length, generator, live=live)

    def model_input(self, space, state):
        return state

    def step(self, space, state, predicted, t, t_next, generator, live=None):
        return space.renoise_input(predicted, t_next, generator, self.noise_scale, live=live)


def _per_sample(value: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """``[B]`` coefficients shaped to broadcast over a ``[B, ...]`` state."""
    return value.view(-1, *([1] * (state.dim() - 1))).to(state.dtype)


def _noise_like(state: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(state.shape, generator=generator, device=state.device, dtype=state.dtype)


class StateSampler(Sampler):
    """A sampler that carries the full state ``x_t`` from the prior; the model sees ``space.state_input``."""

    def initial_state(self, space, batch, length, generator, live=None):
        return space.prior_state(batch, length, generator)

    def model_input(self, space, state):
        return space.state_input(state)


class DDIMSampler(StateSampler):
    """Deterministic DDIM: ``eps = (x_t - mu_t x0) / s_t``, ``x_next = mu_next x0 + s_next eps``."""

    def step(self, space, state, predicted, t, t_next, generator, live=None):
        clean = space.clean_state(predicted)
        mu, std = (_per_sample(v, state) for v in space.schedule.marginal(t))
        mu_next, std_next = (_per_sample(v, state) for v in space.schedule.marginal(t_next))
        eps = (state - mu * clean) / std
        return mu_next * clean + std_next * eps


class DDPMSampler(StateSampler):
    """Ancestral DDPM: a draw from the Gaussian posterior ``q(x_next | x_t, x0)`` with ``alpha_bar = mu^2``."""

    def step(self, space, state, predicted, t, t_next, generator, live=None):
        clean = space.clean_state(predicted)
        mu, _ = (_per_sample(v, state) for v in space.schedule.marginal(t))
        mu_next, std_next = (_per_sample(v, state) for v in space.schedule.marginal(t_next))
        abar, abar_next = mu.pow(2), mu_next.pow(2)
        alpha = abar / abar_next
        mean = (alpha.sqrt() * (1 - abar_next) * state + abar_next.sqrt() * (1 - alpha) * clean) / (1 - abar)
        std = std_next * torch.sqrt((1 - alpha) / (1 - abar))
        return mean + self.noise_scale * std * _noise_like(state, generator)


def diffusion_clock(schedule: Schedule, t: torch.Tensor) -> torch.Tensor:
    """``rho(t) = -2 log mu(t)``, the integral of ``beta``: the time the SDE runs on (float64)."""
    mu, _ = schedule.marginal(t.double())
    return -2.0 * mu.log()


class SDESampler(StateSampler):
    """Euler-Maruyama on the reverse-time SDE of a (scaled) variance-preserving forward process.

    Forward ``dx = -beta x / 2 dt + c sqrt(beta) dW`` with ``c`` the prior std and
    ``beta = d rho / dt``, ``rho = -2 log mu``; the score of ``x_t`` given ``x0`` is
    ``-(x_t - mu x0) / s^2``. In the clock ``rho`` the SDE has unit rate, and a
    reverse step of size ``h`` is ``x + h (x / 2 + c^2 score) + c sqrt(h) z``.

    One grid step spans ``rho(t) - rho(t_next)``, which near ``t = 1`` is far
    above 1 (20 for the sd schedule's first of 200 steps): a single Euler step
    there multiplies the state's std several-fold. The step is therefore cut
    into equal sub-steps of at most ``max_substep`` times the smallest variance
    fraction ``1 - mu^2`` of the span, the scale on which the score changes;
    the prediction is held for the whole grid step (the model runs once).
    """

    def __init__(self, *args, max_substep: float = 0.05, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not max_substep > 0:
            raise ValueError(f"SDE sampler max_substep must be positive, got {max_substep}")
        self.max_substep = max_substep

    def step(self, space, state, predicted, t, t_next, generator, live=None):
        clean = space.clean_state(predicted)
        c = space.schedule.prior_std
        start, end = diffusion_clock(space.schedule, t), diffusion_clock(space.schedule, t_next)
        variance_fraction = -torch.expm1(-end)
        substeps = max(1, math.ceil(float(((start - end) / (self.max_substep * variance_fraction)).max())))
        h = (start - end) / substeps
        rho = start
        for _ in range(substeps):
            mu = _per_sample(torch.exp(-rho / 2), state)
            variance = _per_sample(-torch.expm1(-rho), state)
            size = _per_sample(h, state)
            drift = state / 2 - (state - mu * clean) / variance  # x / 2 + c^2 score
            state = state + size * drift + self.noise_scale * c * size.sqrt() * _noise_like(state, generator)
            rho = rho - h
        return state


SAMPLERS: dict[str, type[Sampler]] = {
    "renoise": RenoiseSampler,
    "ddim": DDIMSampler,
    "ddpm": DDPMSampler,
    "sde": SDESampler,
}


def build_sampler(name: str, **kwargs) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](**kwargs)
