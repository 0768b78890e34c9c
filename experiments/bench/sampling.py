"""Sampling (the re-noise sampler): token-steps/s of the demo model, against the authors' formulation and training.

    python experiments/bench/sampling.py            # demo model, 10 and 50 steps
    python experiments/bench/sampling.py --tiny     # smoke run

A token-step is one modelled target position through one sampler step (batch x L x
steps; with windows, the positions inside them); training tokens/s of the same model (forward, backward, AdamW),
measured in the same run, is the yardstick: a sampler step is forward-only.
Variants: the demo's old default (bf16 autocast and bf16 vocabulary matmuls
whatever the CPU, 8 sequences per batch), the authors' formulation (the
literal distance matrix, softmax and matmul at the full 30,522-row
vocabulary, same dtypes), and the library's default (``vocab_dtype: auto``,
no emulated bf16, see ``smoothie_pl.precision``) at 8 and at 64 sequences per batch, and
at 64 sequences of verse-like lengths (10-58 tokens, in file order) each modelling its own
length plus 8 positions, as the demo does (``length_from_source``).
Every variant samples as the demo does: each prediction clamped to its nearest
vocabulary row before it is re-noised. ``--baseline-src DIR`` adds the library
default of another checkout (``DIR`` is its ``src/``, e.g. a ``git worktree`` of
an earlier commit) in each of those settings, interleaved with the rest, and a column
with the ratio to it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from train_step import DEMO, TINY, autocast, batches, build, measure_one  # noqa: E402

OLD_DEFAULT = {"impl": "streaming", "precision": "bf16", "vocab_dtype": "bfloat16", "batch": 8, "clamp": True}
AUTHORS = {**OLD_DEFAULT, "impl": "literal", "vocab": 30522}
NEW_DEFAULT = {
    "impl": "streaming", "precision": "bf16", "vocab_dtype": "auto", "hardware_aware": True, "batch": 8, "clamp": True
}
# Verse-like batches in file order: sources of 10-58 tokens, each modelling its length plus 8 (as the demo does),
# so about a third of a batch's 64 positions lie past their pair's window.
WINDOWED = {**NEW_DEFAULT, "batch": 64, "length_from_source": 8, "source_lengths": (10, 58)}
LIBRARY_DEFAULTS = [NEW_DEFAULT, {**NEW_DEFAULT, "batch": 64}, WINDOWED]
VARIANTS = [OLD_DEFAULT, AUTHORS, *LIBRARY_DEFAULTS]


def measure(case: dict) -> dict:
    import dataclasses

    import torch

    if case.get("training"):
        return measure_one({**case, "steps": 2})
    module, _ = build(case)
    module.eval()
    module.sampling = dataclasses.replace(module.sampling, clamp=case["clamp"])  # the pipeline is built from it
    batch, generator = next(batches(case)), torch.Generator().manual_seed(1)

    def sample():
        with autocast(case):
            module.pipeline.sample(batch["source_ids"], batch["source_mask"], generator, steps=case["steps"])

    with harness.PeakMemory() as memory:
        seconds = harness.timed(sample)
    width, live = module.pipeline.target_window(batch["source_mask"])
    modelled = case["batch"] * width if live is None else int(live.sum())
    token_steps = modelled * case["steps"]
    package = str(Path(sys.modules["smoothie_pl"].__file__).parent)  # which checkout ran (--baseline-src)
    return {"seconds": seconds, "token_steps_per_s": token_steps / seconds, "extra_bytes": memory.extra_bytes,
            "package": package}


def variant_name(record: dict) -> str:
    if record.get("impl") == "literal":
        return "authors' formulation (literal, full vocabulary)"
    name = "library default" if record.get("hardware_aware") else "old default (bf16 whatever the CPU)"
    if record.get("length_from_source"):
        name += ", verse-length windows"
    return name + (harness.baseline_label(record) if record.get("src") else "")


def baseline_rate(record: dict, group: list[dict]) -> float | None:
    """Token-steps/s of the ``--baseline-src`` row with the same batch, if there is one."""
    matches = [
        r for r in group
        if r.get("src") and r["batch"] == record["batch"] and r.get("length_from_source") == record.get("length_from_source")
    ]  # fmt: skip
    return matches[0].get("token_steps_per_s") if matches else None


def run(args) -> tuple[str, dict]:
    if args.tiny:
        base, step_counts = {"denoiser": TINY, "vocab": 500, "length": 8}, [2]
        variants = [{**variant, "batch": 2, "vocab": 500} for variant in VARIANTS[:3]]
    else:
        base, step_counts = {"denoiser": DEMO, "vocab": 9679, "length": 64}, args.steps
        variants = VARIANTS + [{**variant, "src": args.baseline_src} for variant in LIBRARY_DEFAULTS if args.baseline_src]
    training = harness.interleaved(
        __file__, [{**base, **NEW_DEFAULT, "batch": 32 if not args.tiny else 2, "training": True}], [{}], 1
    )[0]
    cases = [{**base, "steps": steps} for steps in step_counts]
    records = harness.interleaved(__file__, cases, variants, args.rounds, slow_seconds=args.slow_seconds)
    train_rate = training.get("tokens_per_s")
    rows = []
    for index in range(0, len(records), len(variants)):
        group = records[index : index + len(variants)]
        old = group[0].get("token_steps_per_s")
        for record in group:
            rate = record.get("token_steps_per_s")
            rows.append([
                record["steps"], variant_name(record), f"{record['vocab']:,}", record["batch"],
                f"{rate:,.0f}" if rate else record.get("error", "-"), harness.ratio(rate, old),
                harness.ratio(rate, train_rate), harness.gib(record.get("extra_bytes")),
            ] + ([harness.ratio(rate, baseline_rate(record, group))] if args.baseline_src else []))
    headers = ["steps", "variant", "V", "batch", "token-steps/s", "over the old default",
               f"over training tokens/s ({train_rate or 0:,.0f})", "extra GiB"]
    headers += ["over the same batch at --baseline-src"] if args.baseline_src else []
    return harness.markdown_table(headers, rows), {"records": records, "training": training}


def add_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50], help="sampler step counts")
    parser.add_argument("--slow-seconds", type=float, default=120.0,
                        help="a step count whose first round takes longer gets no more rounds")
    harness.add_baseline_argument(parser)


if __name__ == "__main__":
    harness.main(__doc__.splitlines()[0], measure, run, add_arguments)
