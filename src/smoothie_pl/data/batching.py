"""The global batch: the same optimisation on 1 or 64 devices."""

from __future__ import annotations


def split_global_batch(global_batch_size: int, world_size: int, max_device_batch: int) -> tuple[int, int]:
    """``(device_batch, accumulation)`` with ``device_batch * accumulation * world_size == global_batch_size``.

    Accumulation is the smallest that keeps a device's batch at most
    ``max_device_batch`` (the memory limit), so steps are as few as possible.
    """
    if global_batch_size <= 0 or global_batch_size % world_size:
        raise ValueError(
            f"data.global_batch_size={global_batch_size} must be a positive multiple of the "
            f"{world_size} devices (trainer.devices x trainer.num_nodes)"
        )
    per_device = global_batch_size // world_size
    fits = (a for a in range(1, per_device + 1) if per_device % a == 0 and per_device // a <= max_device_batch)
    accumulation = next(fits)
    return per_device // accumulation, accumulation
