"""Samplers: a time grid and one step, behind one contract, chosen by name.

Every sampler walks the grid ``t_k = 1 - k / N`` (``k = 0..N``), runs the model
at ``t_0 .. t_{N-1}`` and returns the last prediction of ``e0``; an optional
``callback(k, t, x, e0)`` sees every evaluation. The re-noise
sampler (the paper's) needs only that prediction and fresh noise, so the
space streams it. DDIM, DDPM and SDE keep the full state between steps
(``[B, L, V]`` for Smoothie and the simplex): fine for ablations at demo
sizes, not for a 30k vocabulary at batch 256.

``noise_scale`` multiplies the std of the noise a sampler injects (1 is the
sampler as published; lower trades diversity for fluency). DDIM injects none.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from smoothie_pl.diffusion.schedules import Schedule

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(model input [B, L, d], t [B]) -> predicted clean embeddings [B, L, d]``."""

StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
"""``(k, t [B], model input x [B, L, d], prediction e0 [B, L, d]) -> None``, after every model evaluation.

It sees the loop as it runs (to record or draw a sample forming); it must not
change the tensors it is given.
"""


class Space(Protocol):
    schedule: Schedule

    def renoise_input(
        self, predicted: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None, noise_scale: float
    ) -> torch.Tensor: ...

    def prior_input(self, batch: int, length: int, generator: torch.Generator | None) -> torch.Tensor: ...

    def prior_state(self, batch: int, length: int, generator: torch.Generator | None) -> torch.Tensor: ...

    def clean_state(self, predicted: torch.Tensor) -> torch.Tensor: ...

    def state_input(self, state: torch.Tensor) -> torch.Tensor: ...


class Sampler:
    """The grid and the loop; subclasses say how the model input moves from ``t_k`` to ``t_{k+1}``."""

    def __init__(self, steps: int = 200, noise_scale: float = 1.0) -> None:
        if steps <= 0:
            raise ValueError(f"sampler steps must be a positive integer, got {steps}")
        if noise_scale < 0:
            raise ValueError(f"sampler noise_scale must be non-negative, got {noise_scale}")
        self.steps = steps
        self.noise_scale = noise_scale

    def timesteps(self, device: torch.device | None = None) -> torch.Tensor:
        return 1.0 - torch.arange(self.steps + 1, device=device, dtype=torch.float32) / self.steps


class RenoiseSampler(Sampler):
    """The paper's sampler: predict ``e0``, then draw the marginal at the next time afresh.

    Each step needs only ``e0`` and fresh noise, so the space can stream it
    without holding the ``[B, L, V]`` state.
    """

    @torch.no_grad()
    def sample(
        self,
        space: Space,
        denoise: Denoise,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        x = space.prior_input(batch, length, generator)
        grid = self.timesteps(device or x.device)
        for k in range(self.steps):
            t = grid[k].expand(batch)
            predicted = denoise(x, t)
            if callback is not None:
                callback(k, t, x, predicted)
            if k + 1 < self.steps:
                x = space.renoise_input(predicted, grid[k + 1].expand(batch), generator, self.noise_scale)
        return predicted


def _per_sample(value: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """``[B]`` coefficients shaped to broadcast over a ``[B, ...]`` state."""
    return value.view(-1, *([1] * (state.dim() - 1))).to(state.dtype)


class StateSampler(Sampler):
    """A sampler that carries the full state ``x_t`` and moves it with ``step``."""

    def step(
        self,
        schedule: Schedule,
        state: torch.Tensor,
        clean: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The state at ``t_next [B]`` from the state at ``t [B]`` and the predicted clean state."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        space: Space,
        denoise: Denoise,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        state = space.prior_state(batch, length, generator)
        grid = self.timesteps(device or state.device)
        for k in range(self.steps):
            t = grid[k].expand(batch)
            x = space.state_input(state)
            predicted = denoise(x, t)
            if callback is not None:
                callback(k, t, x, predicted)
            if k + 1 < self.steps:
                clean = space.clean_state(predicted)
                state = self.step(space.schedule, state, clean, t, grid[k + 1].expand(batch), generator)
        return predicted


class DDIMSampler(StateSampler):
    """Deterministic DDIM: ``eps = (x_t - mu_t x0) / s_t``, ``x_next = mu_next x0 + s_next eps``."""

    def step(self, schedule, state, clean, t, t_next, generator):
        mu, std = (_per_sample(v, state) for v in schedule.marginal(t))
        mu_next, std_next = (_per_sample(v, state) for v in schedule.marginal(t_next))
        eps = (state - mu * clean) / std
        return mu_next * clean + std_next * eps


class DDPMSampler(StateSampler):
    """Ancestral DDPM: a draw from the Gaussian posterior ``q(x_next | x_t, x0)`` with ``alpha_bar = mu^2``."""

    def step(self, schedule, state, clean, t, t_next, generator):
        mu, _ = (_per_sample(v, state) for v in schedule.marginal(t))
        mu_next, std_next = (_per_sample(v, state) for v in schedule.marginal(t_next))
        abar, abar_next = mu.pow(2), mu_next.pow(2)
        alpha = abar / abar_next
        mean = (alpha.sqrt() * (1 - abar_next) * state + abar_next.sqrt() * (1 - alpha) * clean) / (1 - abar)
        std = std_next * torch.sqrt((1 - alpha) / (1 - abar))
        noise = torch.randn(state.shape, generator=generator, device=state.device, dtype=state.dtype)
        return mean + self.noise_scale * std * noise


class SDESampler(StateSampler):
    """Euler-Maruyama on the reverse-time SDE of a (scaled) variance-preserving forward process.

    Forward ``dx = -beta x / 2 dt + c sqrt(beta) dW`` with ``c`` the prior std;
    the score of ``x_t`` given ``x0`` is ``-(x_t - mu x0) / s^2``. One step of
    size ``h = t - t_next``: ``x + h beta (x / 2 + c^2 score) + c sqrt(beta h) z``.
    """

    def step(self, schedule, state, clean, t, t_next, generator):
        mu, std = (_per_sample(v, state) for v in schedule.marginal(t))
        beta = _per_sample(schedule.beta(t), state)
        h = _per_sample(t - t_next, state)
        c = schedule.prior_std
        score = -(state - mu * clean) / std.pow(2)
        drift = beta * (state / 2 + c**2 * score)
        noise = torch.randn(state.shape, generator=generator, device=state.device, dtype=state.dtype)
        return state + h * drift + self.noise_scale * c * torch.sqrt(beta * h) * noise


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
