"""Where a training step of the demo model spends its time: a torch.profiler table by operator.

    PYTHONPATH=src python experiments/bench/profile_step.py                 # the library's default
    PYTHONPATH=src python experiments/bench/profile_step.py --old-default   # bf16 whatever the CPU

Profiles two steps after one warm-up step and prints the operators by
self CPU time, with the share of all matmul FLOPs the step counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_step import DEMO, batches, build, training_step  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-default", action="store_true", help="bf16 autocast and bf16 vocabulary matmuls")
    parser.add_argument("--compile", action="store_true", help="compile the denoiser")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    case = {"denoiser": DEMO, "vocab": 9679, "batch": 32, "length": 64, "impl": "streaming", "precision": "bf16",
            "compile": args.compile}
    case.update({"vocab_dtype": "bfloat16"} if args.old_default else {"vocab_dtype": "auto", "hardware_aware": True})
    module, optimizer = build(case)
    data, generator = batches(case), torch.Generator().manual_seed(1)
    training_step(module, optimizer, next(data), generator, case)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
        for _ in range(2):
            training_step(module, optimizer, next(data), generator, case)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
