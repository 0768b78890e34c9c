"""The paper's optimiser (METHOD section 7): AdamW with a linear warm-up, then a constant rate."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adamw_with_warmup(
    parameters: Iterable[torch.nn.Parameter],
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    warmup_steps: int,
    warmup_start_lr: float,
    fused: bool,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and a per-step schedule rising linearly from ``warmup_start_lr`` to ``lr`` over ``warmup_steps``."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)
    start = min(warmup_start_lr / lr, 1.0)

    def warmup_then_constant(step: int) -> float:
        if warmup_steps <= 0 or step >= warmup_steps:
            return 1.0
        return start + (1.0 - start) * step / warmup_steps

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_constant)
