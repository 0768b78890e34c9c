"""The paper's optimiser (METHOD section 7): AdamW with a linear warm-up, then a constant rate (or a linear decay)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from smoothie_pl.options import OptimConfig


def adamw_with_warmup(
    parameters: Iterable[torch.nn.Parameter], config: OptimConfig, fused: bool
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and a per-step schedule: linear from ``warmup_start_lr`` to ``lr`` over ``warmup_steps``, then
    ``lr`` (the paper), or with ``decay_steps`` linear down to ``final_lr`` at that step."""
    c = config
    optimizer = torch.optim.AdamW(
        parameters, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay, fused=fused
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate(c, step) / c.lr)


def learning_rate(config: OptimConfig, step: int) -> float:
    """The rate at optimiser step ``step`` (0 is the first)."""
    c = config
    if step < c.warmup_steps:
        start = min(c.warmup_start_lr, c.lr)
        return start + (c.lr - start) * step / c.warmup_steps
    if c.decay_steps <= 0:
        return c.lr
    if step >= c.decay_steps:
        return c.final_lr
    return c.lr + (c.final_lr - c.lr) * (step - c.warmup_steps) / (c.decay_steps - c.warmup_steps)
