"""Run ``smoothie ARGS`` and SIGKILL it at one chosen moment: ``python kill_at.py EVENT COUNT FRACTION ARGS...``.

EVENT is counted from this process's start:
  step     after the COUNT-th training step
  write    during the COUNT-th checkpoint write, after FRACTION of its bytes
  replace  after the COUNT-th checkpoint is written, before it is renamed into place
  batch    during the COUNT-th predictions batch write, after FRACTION of its bytes
  merge    during the merge of the prediction parts into the output, after FRACTION of its records
A process that ends before its moment exits normally.
"""

import io
import os
import signal
import sys

import torch

from smoothie_pl import checkpoint_io, io as jsonl_io
from smoothie_pl.callbacks import prediction_writer
from smoothie_pl.cli import main
from smoothie_pl.module import SmoothieModule

EVENT, COUNT, FRACTION = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
seen = {"step": 0, "write": 0, "replace": 0, "batch": 0, "merge": 0}


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reached(event: str) -> bool:
    seen[event] += 1
    return event == EVENT and seen[event] == COUNT


class DyingFile(io.RawIOBase):
    """Passes writes through to ``handle`` and dies once ``limit`` bytes have gone through."""

    def __init__(self, handle, limit: int):
        self.handle, self.limit, self.written = handle, limit, 0

    def writable(self):
        return True

    def write(self, data):
        data = bytes(data)
        if self.written + len(data) >= self.limit:
            self.handle.write(data[: self.limit - self.written])
            self.handle.flush()
            die()
        self.written += len(data)
        return self.handle.write(data)


real_save, real_replace = torch.save, os.replace


def save(obj, handle, *args, **kwargs):
    if reached("write"):
        size = len(_serialised(obj))
        return real_save(obj, DyingFile(handle, max(1, int(size * FRACTION))), *args, **kwargs)
    return real_save(obj, handle, *args, **kwargs)


def _serialised(obj) -> bytes:
    buffer = io.BytesIO()
    real_save(obj, buffer)
    return buffer.getvalue()


def replace(source, target):
    if str(target).endswith(".ckpt") and reached("replace"):
        die()
    return real_replace(source, target)


def step_end(self, outputs, batch, batch_idx):
    if reached("step"):
        die()


real_batch_write = prediction_writer.JsonlPredictionWriter.write_on_batch_end


def batch_write(self, trainer, pl_module, prediction, *args):
    if reached("batch"):
        lines = "".join(__import__("json").dumps(record) + "\n" for record in prediction)
        with self._part.open("a", encoding="utf-8") as out:
            out.write(lines[: int(len(lines) * FRACTION)])
        die()
    return real_batch_write(self, trainer, pl_module, prediction, *args)


def merge(path, records):
    records = list(records)
    if reached("merge"):
        jsonl_io.write_jsonl_atomically(path, (r if i < int(len(records) * FRACTION) else die() for i, r in enumerate(records)))
    return jsonl_io.write_jsonl_atomically(path, records)


checkpoint_io.torch.save = save
checkpoint_io.os.replace = replace
SmoothieModule.on_train_batch_end = step_end
prediction_writer.JsonlPredictionWriter.write_on_batch_end = batch_write
prediction_writer.write_jsonl_atomically = merge
sys.argv = ["smoothie", *sys.argv[4:]]
main()
