"""When validation-time callbacks run: on the first validation batch, at most every N steps."""

from __future__ import annotations

import lightning as L


class ValidationTrigger:
    """Fires on the first batch of a (non sanity-check) validation run, at most once per ``every_n_steps``.

    Callbacks act on the first batch rather than at epoch end because Lightning's
    EMA callback swaps the raw weights back in its own epoch-end hook, which may
    run first; during the batches the EMA weights are always in place.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        self.every_n_steps = every_n_steps
        self._last_step: int | None = None

    def due(self, trainer: L.Trainer, batch_idx: int, dataloader_idx: int) -> bool:
        if trainer.sanity_checking or batch_idx != 0 or dataloader_idx != 0:
            return False
        step = trainer.global_step
        if self.every_n_steps and self._last_step is not None and step - self._last_step < self.every_n_steps:
            return False
        self._last_step = step
        return True
