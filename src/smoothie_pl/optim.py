"""The paper's optimiser (METHOD section 7): AdamW with a linear warm-up, then a constant rate."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from smoothie_pl.options import OptimConfig


def adamw_with_warmup(
    parameters: Iterable[torch.nn.Parameter], config: OptimConfig, fused: bool
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and a per-step schedule rising linearly from ``warmup_start_lr`` to ``lr`` over ``warmup_steps``."""
    c = config
    optimizer = torch.optim.AdamW(
        parameters, lr=c.lr, betas=tuple(c.betas), eps=c.eps, weight_decay=c.weight_decay, fused=fused
    )
    start = min(c.warmup_start_lr / c.lr, 1.0)

    def warmup_then_constant(step: int) -> float:
        if c.warmup_steps <= 0 or step >= c.warmup_steps:
            return 1.0
        return start + (1.0 - start) * step / c.warmup_steps

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_constant)
