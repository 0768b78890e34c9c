"""Shared benchmark machinery: one subprocess per measurement, honest peak memory, interleaved rounds.

Each benchmark script defines ``measure(case) -> dict`` and calls :func:`main`.
The parent process never touches the big tensors: it starts the script again
as a worker (``--worker '<case json>'``) for every variant of every round, so
each measurement has a fresh heap, and the variants of a case alternate
(A, B, A, B, ...) so that load from other processes hits them alike.
With ``--busy`` every measurement runs beside a busy-loop process started
for it (a seeded integer recurrence on one core, as a laptop's browser or a
shared node's other job would be): the busy-machine mode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

GIB = 2**30
BUSY_LOOP = """
import sys
state = int(sys.argv[1])
while True:  # a linear congruential recurrence: pure CPU work, the same for the same seed
    state = (6364136223846793005 * state + 1442695040888963407) % 2**64
"""
busy_processes = 0
"""Busy-loop processes to run beside each measurement (``--busy``)."""


def current_rss() -> int:
    """Resident set size of this process now, in bytes."""
    return _status_kib("VmRSS") * 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss() -> int:
    """Peak resident set size of this process since start or the last reset, in bytes."""
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


class PeakMemory:
    """Bytes the peak RSS rose above the RSS at entry, over the ``with`` block (setup excluded)."""

    def __enter__(self) -> PeakMemory:
        import gc

        gc.collect()
        if not reset_peak_rss():
            raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): Linux is needed for honest peaks")
        self.start = current_rss()
        return self

    def __exit__(self, *exc) -> None:
        # The kernel syncs its per-thread RSS counters lazily, so a block that allocates
        # nothing can read a few pages below its start: that is zero extra memory.
        self.extra_bytes = max(0, peak_rss() - self.start)


def load_vocab_attention():
    """``smoothie_pl.diffusion.vocab_attention`` without importing the package (and Lightning) first.

    The module imports only torch, so a worker that needs nothing else starts
    in seconds rather than the ten it takes to import Lightning on a busy machine.
    """
    import importlib.util

    package = importlib.util.find_spec("smoothie_pl")
    if package is None:
        raise ModuleNotFoundError("smoothie_pl is not importable: put src/ on PYTHONPATH or install the package")
    path = Path(package.submodule_search_locations[0]) / "diffusion" / "vocab_attention.py"
    spec = importlib.util.spec_from_file_location("smoothie_pl_vocab_attention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_baseline_argument(parser: argparse.ArgumentParser) -> None:
    """``--baseline-src DIR``: a case with ``"src": DIR`` runs another checkout's package (see :func:`run_worker`)."""
    parser.add_argument("--baseline-src", metavar="DIR",
                        help="another checkout's src/ (e.g. a git worktree of an earlier commit), measured as extra rows")


def baseline_label(record: dict) -> str:
    """`` at DIR`` for a record measured with another checkout's package, else empty."""
    return f" at {record['src']}" if record.get("src") else ""


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine() -> dict:
    """What the numbers were measured on, including the load from other processes."""
    import torch

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def run_worker(script: str, case: dict) -> dict:
    """Measure ``case`` in a fresh Python process running ``script``; its last stdout line is the JSON result."""
    # Tensors of 1 MiB and more get their own mmap, returned to the system when freed, so the RSS
    # follows live memory: otherwise glibc keeps freed heap pages, and a case's peak would depend
    # on what an earlier step happened to leave behind.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    if case.get("src"):  # another checkout's package (a baseline commit) in place of this one's
        env["PYTHONPATH"] = os.pathsep.join([str(Path(case["src"]).resolve()), env.get("PYTHONPATH", "")])
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(seed)]) for seed in range(busy_processes)]
    try:
        result = subprocess.run(
            [sys.executable, script, "--worker", json.dumps({**case, "busy": busy_processes} if busy else case)],
            capture_output=True, text=True, env=env,
        )
    finally:
        for process in busy:
            process.kill()
            process.wait()
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-3:]
        return {"error": f"worker exited with {result.returncode}: {' | '.join(tail)}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def interleaved(script: str, cases: list[dict], variants: list[dict], rounds: int, slow_seconds: float = 20.0) -> list[dict]:
    """Every case under every variant, variants alternating within each round.

    Returns one record per (case, variant) with the median of its ``seconds``
    and the largest ``extra_bytes`` over rounds. A case whose first round of
    measurements took longer than ``slow_seconds`` in all gets no more rounds
    (large cases on small machines).
    """
    records = []
    for case in cases:
        runs: list[list[dict]] = [[] for _ in variants]
        for round_index in range(rounds):
            for runs_of_variant, variant in zip(runs, variants):
                runs_of_variant.append(run_worker(script, {**case, **variant}))
            measured = sum(variant_runs[-1].get("seconds", 0.0) for variant_runs in runs)
            if round_index == 0 and measured > slow_seconds:
                break
        for runs_of_variant, variant in zip(runs, variants):
            records.append(summarise({**case, **variant}, runs_of_variant))
            print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    return records


def summarise(case: dict, runs: list[dict]) -> dict:
    good = [run for run in runs if "error" not in run]
    if not good:
        return {**case, **runs[0]}
    summary = {**case, "rounds": len(good), "seconds_all": [run["seconds"] for run in good]}
    for key in good[0]:
        values = [run[key] for run in good]
        if key == "extra_bytes":
            summary[key] = max(values)
        elif isinstance(values[0], (int, float)) and not isinstance(values[0], bool):
            summary[key] = statistics.median(values)
        else:
            summary[key] = values[0]
    return summary


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def main(
    description: str,
    measure: Callable[[dict], dict],
    run: Callable[[argparse.Namespace], tuple[str, dict]],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Worker mode (``--worker``) measures one case; otherwise ``run`` prints its table and writes JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one round (the test suite's smoke run)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats per case (median reported)")
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/results"), help="folder for JSON and tables")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="busy-machine mode: N busy-loop processes beside every measurement")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    if args.tiny:
        args.rounds = 1
    global busy_processes
    busy_processes = args.busy
    table, payload = run(args)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    name = Path(sys.argv[0]).stem + ("_tiny" if args.tiny else "") + (f"_busy{args.busy}" if args.busy else "")
    (args.out / f"{name}.json").write_text(json.dumps({"machine": machine(), **payload}, indent=1))
    (args.out / f"{name}.md").write_text(table + "\n")
