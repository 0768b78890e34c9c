"""Every benchmark, one after the other, and one markdown file of README-ready tables.

    PYTHONPATH=src python experiments/bench/run_all.py            # the full tables (about 30 minutes on 2 quiet cores)
    PYTHONPATH=src python experiments/bench/run_all.py --tiny     # smoke run

Writes experiments/bench/results/{vocab_op,train_step,sampling,scaling}.{json,md},
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
BENCHMARKS = {
    "vocab_op": "The vocabulary operation (forward)",
    "train_step": "A training step",
    "sampling": "Sampling",
    "scaling": "Growth with V and with positions (plot: scaling.png)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    suffix = "_tiny" if args.tiny else ""
    sections = [f"Measured {json.dumps(harness.machine())}"]
    for name, title in BENCHMARKS.items():
        command = [sys.executable, str(HERE / f"{name}.py"), "--out", str(args.out)] + (["--tiny"] if args.tiny else [])
        subprocess.run(command, check=True)
        sections.append(f"### {title}\n\n" + (args.out / f"{name}{suffix}.md").read_text())
    (args.out / f"tables{suffix}.md").write_text("\n\n".join(sections) + "\n")
    print(f"tables written to {args.out / f'tables{suffix}.md'}")


if __name__ == "__main__":
    main()
