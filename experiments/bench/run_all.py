"""Every benchmark, one after the other, and one markdown file of README-ready tables.

    PYTHONPATH=src python experiments/bench/run_all.py            # the full tables (about 30 minutes on 2 quiet cores)
    PYTHONPATH=src python experiments/bench/run_all.py --tiny     # smoke run

Writes experiments/bench/results/{vocab_op,vocab_op_busy1,train_step,demo_recipe,sampling,scaling}.{json,md},
scaling.png and tables.md (with the machine and the date).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

HERE = Path(__file__).resolve().parent
BUSY_CASE = ["--vocab", "30522", "--positions", "2048", "--dim", "384"]
# (script, extra arguments, extra arguments of the smoke run, title)
BENCHMARKS = [
    ("vocab_op", [], [], "The vocabulary operation (forward)"),
    ("vocab_op", ["--busy", "1", *BUSY_CASE], ["--busy", "1"],
     "The vocabulary operation beside a busy-loop process (busy-machine mode)"),
    ("train_step", [], [], "A training step"),
    ("demo_recipe", [], [], "The demo's training step on Bible batches, and its decoding cross-entropy"),
    ("sampling", [], [], "Sampling"),
    ("scaling", [], [], "Growth with V and with positions (plot: scaling.png)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    suffix = "_tiny" if args.tiny else ""
    sections = [f"Measured {json.dumps(harness.machine())}"]
    for script, extra, tiny_extra, title in BENCHMARKS:
        options = ["--tiny", *tiny_extra] if args.tiny else extra
        subprocess.run([sys.executable, str(HERE / f"{script}.py"), "--out", str(args.out), *options], check=True)
        busy = f"_busy{options[options.index('--busy') + 1]}" if "--busy" in options else ""
        sections.append(f"### {title}\n\n" + (args.out / f"{script}{suffix}{busy}.md").read_text())
    (args.out / f"tables{suffix}.md").write_text("\n\n".join(sections) + "\n")
    print(f"tables written to {args.out / f'tables{suffix}.md'}")


if __name__ == "__main__":
    main()
