"""A full training step (forward, backward, AdamW): tokens/s, peak extra memory and achieved FLOP/s.

    python experiments/bench/train_step.py          # demo and paper-size models, V=131072 memory, loss curves
    python experiments/bench/train_step.py --tiny   # smoke run

Variants of the same module: the library's streaming vocabulary operation vs
the literal formula swapped in (``vocab_attention="literal"``; at the full
30,522-row vocabulary it is the authors' step), fp32 vs bf16 autocast (the
vocabulary matmuls follow: fp32 or bf16), eager vs ``compile_denoiser`` (its
compilation is in the untimed first step, reported), and the demo's old
default (bf16 autocast and bf16 vocabulary matmuls, whatever the CPU) against
the library's default (``vocab_dtype: auto`` and no emulated bf16, see
``smoothie_pl.precision``), with the optimiser steps per minute of an 800-step
run, start-up (building, first step, compiling) included. Achieved FLOP/s
counts the step's matmuls (``torch.utils.flop_counter``) and is compared with
a large matmul timed in the same process (the faster of fp32 and, where the
CPU has bf16 units, bf16): the distance to the physical limit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

DEMO = {"width": 256, "depth": 6, "heads": 4, "encoder_depth": 3, "dropout": 0.0, "rope": True}
PAPER = {"width": 768, "depth": 12, "heads": 12, "encoder_depth": 6, "dropout": 0.1}
TINY = {"width": 32, "depth": 2, "heads": 2, "encoder_depth": 1, "dropout": 0.0}
PEAK_MATMUL = 2048
HARDWARE_BF16: dict[str, bool] = {}  # what the CPU really has, kept when a case pretends otherwise
DEMO_STEPS = 800  # the demo's max_steps: start-up is spread over this many steps


def build(case: dict):
    """The module of ``case`` over a vocabulary of ``case["vocab"]`` rows and its AdamW optimizer."""
    import torch

    from smoothie_pl.models import DenoiserConfig
    from smoothie_pl.module import SmoothieModule

    if not case.get("hardware_aware"):
        # The old behaviour: bf16 as asked whatever the CPU (the module's own steps consult this too).
        from smoothie_pl import precision

        HARDWARE_BF16.setdefault("units", precision.cpu_has_bf16_units())
        precision.cpu_has_bf16_units = lambda: True
    torch.manual_seed(case.get("seed", 0))
    module = SmoothieModule(
        target_length=case["length"], source_length=case["length"], denoiser=DenoiserConfig(**case["denoiser"]),
        vocabulary=list(range(min(case["vocab"], 30522))), vocab_attention=case["impl"],
        vocab_dtype=vocab_dtype(case), optim={"warmup_steps": 0, "lr": 1e-3},
        compile_denoiser=case.get("compile", False), length_from_source=case.get("length_from_source"),
    )
    if case["vocab"] > module.embedding_matrix.shape[0]:  # a synthetic vocabulary larger than MiniLM's
        module.embedding_matrix = torch.randn(case["vocab"], module.embedding_matrix.shape[1])
        module._build_space(torch.arange(case["vocab"]))
    optimizer = module.configure_optimizers()["optimizer"]
    return module, optimizer


def vocab_dtype(case: dict) -> str:
    """The case's ``vocab_dtype``; unless it names one, the vocabulary matmuls follow the autocast."""
    return case.get("vocab_dtype") or ("bfloat16" if case["precision"] == "bf16" else "float32")


def autocast(case: dict):
    """The case's autocast; ``hardware_aware`` cases go through the library's fallback from emulated bf16."""
    import contextlib

    import torch

    from smoothie_pl.precision import fastest_autocast

    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16, enabled=case["precision"] == "bf16"))
    if case.get("hardware_aware"):
        stack.enter_context(fastest_autocast(torch.device("cpu")))
    return stack


def batches(case: dict):
    """Copy-task batches (target = source) of random rows, so a loss curve can fall.

    ``source_lengths: (low, high)``: each source has a length drawn uniformly from that range (padding after it),
    as verses in file order have; otherwise every source fills all ``length`` positions.
    """
    import torch

    generator = torch.Generator().manual_seed(case.get("seed", 0))
    while True:
        ids = torch.randint(0, min(case["vocab"], 30522), (case["batch"], case["length"]), generator=generator)
        mask = torch.ones_like(ids, dtype=torch.bool)
        if case.get("source_lengths"):
            low, high = case["source_lengths"]
            lengths = torch.randint(low, high + 1, (case["batch"], 1), generator=generator)
            mask = torch.arange(case["length"]) < lengths
            ids = ids.masked_fill(~mask, 0)
        yield {"target_ids": ids, "source_ids": ids, "source_mask": mask}


def training_step(module, optimizer, batch, generator, case: dict) -> float:
    with autocast(case):
        loss = module.diffusion_loss(batch, generator)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def matmul_peak() -> float:
    """FLOP/s of a large square matmul in this process, fp32 or bf16 whichever is faster: the practical ceiling.

    bf16 is timed only where the CPU has bf16 units; emulated, one such matmul takes minutes.
    """
    import torch

    from smoothie_pl.precision import cpu_has_bf16_units

    units = HARDWARE_BF16.get("units", cpu_has_bf16_units())
    def peak(dtype) -> float:
        a, b = torch.randn(PEAK_MATMUL, PEAK_MATMUL).to(dtype), torch.randn(PEAK_MATMUL, PEAK_MATMUL).to(dtype)
        a @ b
        return 2 * PEAK_MATMUL**3 / min(harness.timed(lambda: a @ b) for _ in range(3))

    return max(peak(dtype) for dtype in ([torch.float32, torch.bfloat16] if units else [torch.float32]))


def measure(case: dict) -> dict:
    if "curves" in case:  # several loss curves in one worker: they need no fresh heap, only time
        return {"curves": [measure_one(curve) for curve in case["curves"]]}
    return measure_one(case)


def measure_one(case: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    start = time.perf_counter()
    module, optimizer = build(case)
    build_seconds = time.perf_counter() - start
    data, generator = batches(case), torch.Generator().manual_seed(1)
    if case.get("curve"):
        return {"losses": [training_step(module, optimizer, next(data), generator, case) for _ in range(case["steps"])]}
    # Warm-up: optimizer state, allocator, and the compilation of a compiled denoiser.
    first_step = harness.timed(lambda: training_step(module, optimizer, next(data), generator, case))
    steps = [next(data) for _ in range(case["steps"])]
    with harness.PeakMemory() as memory:
        seconds = harness.timed(lambda: [training_step(module, optimizer, b, generator, case) for b in steps])
    with FlopCounterMode(display=False) as counter:
        training_step(module, optimizer, steps[0], generator, case)
    tokens = case["batch"] * case["length"] * case["steps"]
    flops = counter.get_total_flops() * case["steps"]
    step_seconds = seconds / case["steps"]
    startup = build_seconds + first_step - step_seconds  # what the run spends beyond its steps
    return {
        "seconds": seconds, "first_step_seconds": first_step, "startup_seconds": startup,
        "tokens_per_s": tokens / seconds,
        "demo_steps_per_minute": 60 * DEMO_STEPS / (startup + DEMO_STEPS * step_seconds),
        "extra_bytes": memory.extra_bytes,
        "flops_per_s": flops / seconds, "peak_flops_per_s": matmul_peak(),
    }


def speed_cases(tiny: bool) -> list[tuple[str, dict, list[dict]]]:
    impls = [{"impl": "literal"}, {"impl": "streaming"}]  # baseline first: the table reports speed-ups over it
    precisions = [{"precision": "fp32"}, {"precision": "bf16"}]
    if tiny:
        tiny_case = {"model": "tiny", "denoiser": TINY, "vocab": 500, "batch": 2, "length": 8, "steps": 1}
        return [("tiny", {**tiny_case, "precision": "bf16"}, impls), ("tiny", {**tiny_case, "impl": "streaming"}, precisions)]
    demo = {"model": "demo", "denoiser": DEMO, "vocab": 9679, "batch": 32, "length": 64, "steps": 3}
    paper = {"model": "paper", "denoiser": PAPER, "vocab": 30522, "batch": 4, "length": 64, "steps": 2}
    big_vocab = {"model": "demo", "denoiser": DEMO, "vocab": 131072, "batch": 128, "length": 64, "steps": 1,
                 "precision": "bf16", "impl": "streaming"}
    # The demo's yaml asks for bf16-mixed; the library's default honours it where the CPU has bf16 units.
    old_default = {"precision": "bf16", "vocab_dtype": "bfloat16"}
    new_default = {"precision": "bf16", "vocab_dtype": "auto", "hardware_aware": True}
    authors = {"impl": "literal", "vocab": 30522, **old_default}
    return [
        ("demo default: old vs new", {**demo, "impl": "streaming"},
         [old_default, new_default, {**new_default, "compile": True}]),
        ("eager vs torch.compile, demo model", {**demo, "impl": "streaming", **new_default},
         [{"compile": False}, {"compile": True}]),
        ("authors' step (literal, full vocabulary) vs the library's default, demo model", {**demo, "steps": 1},
         [authors, {**new_default, "impl": "streaming", "vocab": 30522}, {**new_default, "impl": "streaming"}]),
        ("fp32 vs bf16 autocast, demo model", {**demo, "impl": "streaming"}, precisions),
        ("library vs literal, paper-size model", {**paper, **new_default}, impls),
        ("V = 131,072, 8,192 positions", {**big_vocab, **new_default}, [{}]),
    ]


def curve_cases(tiny: bool) -> list[dict]:
    """fp32 at two seeds (the noise level between runs) and bf16 at the first seed."""
    base = {"curve": True, "impl": "streaming", "model": "demo", "denoiser": DEMO, "vocab": 9679, "batch": 32,
            "length": 64, "steps": 60}
    if tiny:
        base = {**base, "model": "tiny", "denoiser": TINY, "vocab": 500, "batch": 2, "length": 8, "steps": 2}
    return [{**base, "precision": "fp32", "seed": 0}, {**base, "precision": "fp32", "seed": 1},
            {**base, "precision": "bf16", "seed": 0}]


def run(args) -> tuple[str, dict]:
    rows, records = [], []
    for title, case, variants in speed_cases(args.tiny):
        if args.only and not any(word in title for word in args.only):
            continue
        measured = harness.interleaved(__file__, [case], variants, args.rounds, slow_seconds=args.slow_seconds)
        records += measured
        base = measured[0].get("tokens_per_s")
        for record in measured:
            rows.append([
                title, variant_name(record), record.get("precision"), f"{record['vocab']:,}",
                f"{record['batch']}x{record['length']}",
                f"{record.get('tokens_per_s', float('nan')):,.0f}", harness.ratio(record.get("tokens_per_s"), base),
                f"{record.get('demo_steps_per_minute', float('nan')):.1f}",
                harness.gib(record.get("extra_bytes")),
                f"{record.get('flops_per_s', 0) / 1e9:.0f} / {record.get('peak_flops_per_s', 0) / 1e9:.0f}",
                record.get("error") or compile_note(record),
            ])
    headers = ["comparison", "variant", "autocast asked", "V", "batch x L", "tokens/s", "speed-up over the first row",
               f"steps/min over {DEMO_STEPS} steps, start-up included", "extra GiB",
               "GFLOP/s achieved / matmul peak", "note"]
    table = harness.markdown_table(headers, rows)
    curves = []
    if not args.only:
        measured_curves = harness.run_worker(__file__, {"curves": curve_cases(args.tiny)})
        curves = measured_curves.get("curves", [measured_curves] * len(curve_cases(args.tiny)))
        curve_rows = [[case["precision"], case["seed"], *summarise_curve(curve)] for case, curve in zip(curve_cases(args.tiny), curves)]
        table += "\n\nLoss curves (copy task, demo model):\n\n" + harness.markdown_table(
            ["precision", "seed", "first loss", "mean of last 10", "min"], curve_rows
        )
    return table, {"records": records, "curves": curves}


def variant_name(record: dict) -> str:
    """The vocabulary op, its dtype and the compile and hardware choices of a record, in a few words."""
    words = [record.get("impl", "?"), f"vocab {vocab_dtype(record)}"]
    if record.get("hardware_aware"):
        words.append("no emulated bf16")
    if record.get("compile"):
        words.append("compile")
    return ", ".join(words)


def add_arguments(parser) -> None:
    parser.add_argument("--only", nargs="+", help="run only the comparisons whose title contains one of these words")
    parser.add_argument("--slow-seconds", type=float, default=20.0,
                        help="a comparison whose first round takes longer gets no more rounds")


def compile_note(record: dict) -> str:
    if not record.get("compile") or "first_step_seconds" not in record:
        return ""
    return f"first step {record['first_step_seconds']:.0f} s (compiling)"


def summarise_curve(curve: dict) -> list[str]:
    losses = curve.get("losses")
    if not losses:
        return [curve.get("error", "-"), "-", "-"]
    tail = losses[-10:]
    return [f"{losses[0]:.4f}", f"{sum(tail) / len(tail):.4f}", f"{min(losses):.4f}"]


if __name__ == "__main__":
    harness.main(__doc__.splitlines()[0], measure, run, add_arguments)
