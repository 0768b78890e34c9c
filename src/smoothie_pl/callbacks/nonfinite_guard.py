"""Stops (or skips the batch) at the first NaN or infinite loss or gradient, before any weight is updated with it."""

from __future__ import annotations

import os

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

from smoothie_pl.errors import NonFiniteLossError


def last_good_checkpoint(trainer) -> str | None:
    """The newest checkpoint the trainer's checkpoint callbacks wrote, if any."""
    paths = {
        path
        for callback in trainer.checkpoint_callbacks
        for path in (callback.last_model_path, callback.best_model_path)
        if path and os.path.isfile(path)
    }
    return max(paths, key=os.path.getmtime) if paths else None


class NonFiniteGuard(Callback):
    """Guards the weights against a diverging run.

    A non-finite loss, or a non-finite gradient after backward, stops training
    with ``NonFiniteLossError`` naming the step, the batch index and the last
    checkpoint written (every checkpoint so far holds finite weights, since no
    update has used a non-finite value). With ``skip_batches`` the optimizer
    step of that batch is skipped instead (its gradients are dropped) and a
    warning says so. Runs with a gradient scaler (fp16) skip overflowing steps
    themselves, so their gradients are not checked, only the loss.
    """

    def __init__(self, skip_batches: bool = False) -> None:
        self.skip_batches = skip_batches
        self.skipped = 0
        self._batch_idx = 0
        self._problem: str | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._batch_idx = batch_idx
        self._problem = None

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            self._problem = f"loss ({loss.detach().float().cpu().flatten()[0].item()})"

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._problem is None and getattr(trainer.precision_plugin, "scaler", None) is None:
            self._problem = self._nonfinite_gradient(pl_module)
        if self._problem is None:
            return
        where = f"at step {trainer.global_step} (epoch {trainer.current_epoch}, batch index {self._batch_idx})"
        if self.skip_batches:
            for group in optimizer.param_groups:
                for parameter in group["params"]:
                    parameter.grad = None  # optimizers leave parameters without a gradient untouched
            self.skipped += 1
            rank_zero_warn(f"skipped the optimizer step {where}: non-finite {self._problem}")
            return
        checkpoint = last_good_checkpoint(trainer)
        raise NonFiniteLossError(
            f"non-finite {self._problem} {where}; training stopped before updating the weights with it. "
            f"Last good checkpoint: {checkpoint or 'none written yet'}. Lower model.optim.lr, clip gradients "
            "(trainer.gradient_clip_val) or set --nonfinite_guard.skip_batches true to skip such batches."
        )

    @staticmethod
    def _nonfinite_gradient(pl_module) -> str | None:
        gradients = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not gradients or torch.isfinite(torch.nn.utils.get_total_norm(gradients)):
            return None
        bad = (name for name, p in pl_module.named_parameters() if p.grad is not None and not p.grad.isfinite().all())
        name = next(bad)
        return f"gradient (first in {name})"
