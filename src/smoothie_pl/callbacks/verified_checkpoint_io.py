"""Lightning's checkpoint plugin for ``smoothie_pl.checkpoint_io``: atomic writes with digests, verified safe reads."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from smoothie_pl.checkpoint_io import load_verified, save_atomically


class VerifiedCheckpointIO(TorchCheckpointIO):
    """What every ``Trainer`` the CLI builds saves and loads checkpoints with.

    Pass ``plugins=[VerifiedCheckpointIO()]`` to a ``Trainer`` of your own for the
    same guarantees. Loading ignores ``weights_only=False``: a checkpoint never runs code.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_verified(path)
