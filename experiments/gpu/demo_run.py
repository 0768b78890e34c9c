"""The Bible demo model on a GPU for a fixed wall time: optimiser steps per second and the validation loss.

    PYTHONPATH=src python experiments/gpu/demo_run.py --minutes 5 --batch-size 256

The demo's yaml with the GPU's batch, a time limit instead of 1,000 steps, and
validation at the end only; prints one summary line.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default="runs/gpu-demo")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        return
    from smoothie_pl.cli import build_cli

    seconds = int(args.minutes * 60)
    cli = build_cli([
        "--config", "lightning_configs/demo.yaml", "--trainer.accelerator", "gpu",
        "--trainer.max_steps", "-1", "--trainer.max_time", f"00:00:{seconds // 60:02d}:{seconds % 60:02d}",
        "--trainer.val_check_interval", "1.0", "--trainer.check_val_every_n_epoch", "1000000",
        "--trainer.default_root_dir", args.out, "--data.init_args.batch_size", str(args.batch_size),
    ], run=False)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    elapsed = time.perf_counter() - start
    (metrics,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    steps = cli.trainer.global_step
    print(f"gpu demo: {steps} steps in {elapsed:.0f} s ({steps / elapsed:.2f} steps/s, batch {args.batch_size}, "
          f"start-up included), validation loss {metrics['val/loss']:.4f}, "
          f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
