"""Writes ``predict`` outputs as jsonl, one line per source, in dataset order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from smoothie_pl.io import write_jsonl_atomically


class JsonlPredictionWriter(BasePredictionWriter):
    """Collects every batch's records and writes them once, sorted by ``index``, atomically.

    Each line holds ``index``, ``source``, ``reference`` and ``prediction``.
    A relative ``output`` is placed under the trainer's ``default_root_dir``.
    """

    def __init__(self, output: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="epoch")
        self.output = output

    def resolve_output(self, trainer) -> Path:
        path = Path(self.output)
        return path if path.is_absolute() else Path(trainer.default_root_dir) / path

    def write_on_epoch_end(self, trainer, pl_module, predictions: list[Any], batch_indices: Any) -> None:
        records = sorted((record for batch in predictions for record in batch), key=lambda record: record["index"])
        path = self.resolve_output(trainer)
        write_jsonl_atomically(path, records)
        print(f"wrote {len(records)} predictions to {path}")
