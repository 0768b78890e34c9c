"""Sampling (the re-noise sampler): tokens/s at 50 and 200 steps, library vs the literal formula.

    python experiments/bench/sampling.py            # demo model, bf16, batch 8 x 64 tokens
    python experiments/bench/sampling.py --tiny     # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from train_step import DEMO, TINY, batches, build  # noqa: E402


def measure(case: dict) -> dict:
    import torch

    module, _ = build(case)
    module.eval()
    batch, generator = next(batches(case)), torch.Generator().manual_seed(1)

    def sample():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case["precision"] == "bf16"):
            module.pipeline.sample(batch["source_ids"], batch["source_mask"], generator, steps=case["steps"])

    with harness.PeakMemory() as memory:
        seconds = harness.timed(sample)
    return {"seconds": seconds, "tokens_per_s": case["batch"] * case["length"] / seconds, "extra_bytes": memory.extra_bytes}


def run(args) -> tuple[str, dict]:
    if args.tiny:
        base, step_counts = {"denoiser": TINY, "vocab": 500, "batch": 2, "length": 8}, [2]
    else:
        base, step_counts = {"denoiser": DEMO, "vocab": 9679, "batch": 8, "length": 64}, [50, 200]
    cases = [{**base, "precision": "bf16", "steps": steps} for steps in step_counts]
    records = harness.interleaved(__file__, cases, [{"impl": "streaming"}, {"impl": "literal"}], args.rounds, slow_seconds=120)
    rows = []
    for streaming, literal in zip(records[::2], records[1::2]):
        rows.append([
            streaming["steps"], f"{streaming.get('tokens_per_s', 0):.1f}", f"{literal.get('tokens_per_s', 0):.1f}",
            harness.ratio(streaming.get("tokens_per_s"), literal.get("tokens_per_s")),
            harness.gib(streaming.get("extra_bytes")), harness.gib(literal.get("extra_bytes")),
        ])
    headers = ["steps", "streaming tokens/s", "literal tokens/s", "speed-up", "streaming GiB", "literal GiB"]
    return harness.markdown_table(headers, rows), {"records": records}


if __name__ == "__main__":
    harness.main(__doc__.splitlines()[0], measure, run)
