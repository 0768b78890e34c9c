"""How the vocabulary operation's time and peak memory grow with V and with the number of positions (a plot).

    python experiments/bench/scaling.py          # writes results/scaling.png, .json and .md
    python experiments/bench/scaling.py --tiny   # smoke run
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import vocab_op  # noqa: E402

measure = vocab_op.measure


def sweeps(tiny: bool) -> dict[str, list[dict]]:
    """The V sweep (positions fixed) and the positions sweep (V fixed), d=384 in bf16."""
    base = {"dim": 32 if tiny else 384, "dtype": "bfloat16"}
    vocabs = [500, 2000] if tiny else [4096, 16384, 65536, 131072]
    positions = [64, 256] if tiny else [512, 2048, 8192]
    return {
        "vocab": [{**base, "vocab": v, "positions": 64 if tiny else 2048} for v in vocabs],
        "positions": [{**base, "vocab": 500 if tiny else 30522, "positions": n} for n in positions],
    }


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    for column, (axis_key, records) in enumerate(results.items()):
        for impl, style in (("streaming", "o-"), ("literal", "s--")):
            mine = [r for r in records if r["impl"] == impl and "seconds" in r]
            xs = [r[axis_key] for r in mine]
            axes[0][column].plot(xs, [r["seconds"] for r in mine], style, label=impl)
            axes[1][column].plot(xs, [r["extra_bytes"] / harness.GIB for r in mine], style, label=impl)
        for row, label in ((0, "forward seconds"), (1, "peak extra GiB")):
            axes[row][column].set(xscale="log", yscale="log", xlabel=axis_key, ylabel=label)
            axes[row][column].legend()
    figure.suptitle("softmax(mu D + s eps) E: streaming vs literal (bf16 matmuls)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def run(args) -> tuple[str, dict]:
    results = {key: vocab_op.compare(__file__, cases, args.rounds, args.literal_budget_gib)
               for key, cases in sweeps(args.tiny).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / ("scaling_tiny.png" if args.tiny else "scaling.png"))
    table = "\n\n".join(vocab_op.table(records) for records in results.values())
    return table, {"results": results}


if __name__ == "__main__":
    harness.main(__doc__.splitlines()[0], measure, run, vocab_op.add_budget_argument)
