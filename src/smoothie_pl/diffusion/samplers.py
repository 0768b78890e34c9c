"""Samplers: a time grid and one step, behind one contract, chosen by name."""

from __future__ import annotations

from typing import Callable, Protocol

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(model input [B, L, d], t [B]) -> predicted clean embeddings [B, L, d]``."""


class Space(Protocol):
    def noised_input(
        self, clean: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None, noise_scale: float
    ) -> torch.Tensor: ...

    def prior_input(self, batch: int, length: int, generator: torch.Generator | None) -> torch.Tensor: ...


class RenoiseSampler:
    """The paper's sampler: predict ``e0``, then draw the marginal at the next time afresh.

    Grid ``t_k = 1 - k / N``; the model runs at ``t_0 .. t_{N-1}`` and the last
    prediction is the output. Each step needs only ``e0`` and fresh noise, so
    the space can stream it without holding the ``[B, L, V]`` state.
    ``noise_scale`` < 1 injects less fresh noise than the forward process.
    """

    def __init__(self, steps: int = 200, noise_scale: float = 1.0) -> None:
        if steps <= 0:
            raise ValueError(f"sampler steps must be a positive integer, got {steps}")
        if noise_scale < 0:
            raise ValueError(f"sampler noise_scale must be non-negative, got {noise_scale}")
        self.steps = steps
        self.noise_scale = noise_scale

    def timesteps(self, device: torch.device | None = None) -> torch.Tensor:
        return 1.0 - torch.arange(self.steps + 1, device=device, dtype=torch.float32) / self.steps

    def step(
        self, space: Space, predicted: torch.Tensor, t_next: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        return space.noised_input(predicted, t_next, generator, self.noise_scale)

    @torch.no_grad()
    def sample(
        self,
        space: Space,
        denoise: Denoise,
        batch: int,
        length: int,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> torch.Tensor:
        grid = self.timesteps(device)
        x = space.prior_input(batch, length, generator)
        for k in range(self.steps):
            predicted = denoise(x, grid[k].expand(batch))
            if k + 1 < self.steps:
                x = self.step(space, predicted, grid[k + 1].expand(batch), generator)
        return predicted


SAMPLERS = {"renoise": RenoiseSampler}


def build_sampler(name: str, **kwargs) -> RenoiseSampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](**kwargs)
