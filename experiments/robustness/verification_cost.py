"""What checkpoint verification costs on a checkpoint the size of the demo's.

Builds the demo's model (lightning_configs/demo.yaml: width 256, depth 6, the packaged
MiniLM's 30,522 x 384 embedding matrix), a checkpoint holding what a fit saves
(weights, the EMA's raw copy, AdamW's two moments), and prints the median seconds of
    python experiments/robustness/verification_cost.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from smoothie_pl.checkpoint_io import load_verified, read_checkpoint, save_atomically, tensor_digests
from smoothie_pl.models import DenoiserConfig
from smoothie_pl.module import SmoothieModule

REPEATS = 5


def demo_checkpoint() -> dict:
    module = SmoothieModule(
        denoiser=DenoiserConfig(width=256, depth=6, heads=4, encoder_depth=3, dropout=0.0, rope=True),
        vocab_dtype="bfloat16",
    )
    weights = module.state_dict()
    moments = {i: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
               for i, p in enumerate(module.parameters())}
    return {
        "state_dict": weights,
        "current_model_state": {name: tensor.clone() for name, tensor in weights.items()},
        "optimizer_states": [{"state": moments}],
        "global_step": 800,
    }


def median_seconds(work) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def touch_every_tensor(checkpoint: dict) -> None:
    """Read every byte, as loading the weights into a model does."""
    for value in checkpoint["state_dict"].values():
        value.sum()


def main() -> None:
    torch.set_num_threads(1)
    checkpoint = demo_checkpoint()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "demo.ckpt"
        save_atomically(checkpoint, path)
        size = path.stat().st_size / 2**20
        rows = {
            "digests of every tensor (in memory)": median_seconds(lambda: tensor_digests(checkpoint)),
            "torch.save to a BytesIO": median_seconds(lambda: torch.save(checkpoint, __import__("io").BytesIO())),
            "save_atomically (digests, write, fsync, rename)": median_seconds(lambda: save_atomically(checkpoint, path)),
            "read_checkpoint (safe load, no verification)": median_seconds(
                lambda: touch_every_tensor(read_checkpoint(path))),
            "load_verified (safe load, digests, finiteness)": median_seconds(lambda: load_verified(path)),
        }
    print(f"checkpoint of {size:.0f} MiB, median of {REPEATS}, 1 thread")
    for name, seconds in rows.items():
        print(f"{name:<50} {seconds:7.3f} s")


if __name__ == "__main__":
    main()
