"""A full training step (forward, backward, AdamW): tokens/s, peak extra memory and achieved FLOP/s.

    python experiments/bench/train_step.py          # demo and paper-size models, V=131072 memory, loss curves
    python experiments/bench/train_step.py --tiny   # smoke run

Variants of the same module: the library's streaming vocabulary operation vs
the literal formula swapped in (``vocab_attention="literal"``), fp32 vs
bf16 autocast (the vocabulary matmuls follow: fp32 or bf16), and eager vs
``compile_denoiser`` (its compilation is in the untimed first step, reported). Achieved FLOP/s
counts the step's matmuls (``torch.utils.flop_counter``) and is compared with
a large matmul timed in the same process: the distance to the physical limit.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

DEMO = {"width": 256, "depth": 6, "heads": 4, "encoder_depth": 3, "dropout": 0.0, "rope": True}
PAPER = {"width": 768, "depth": 12, "heads": 12, "encoder_depth": 6, "dropout": 0.1}
TINY = {"width": 32, "depth": 2, "heads": 2, "encoder_depth": 1, "dropout": 0.0}
PEAK_MATMUL = 2048


def build(case: dict):
    """The module of ``case`` over a vocabulary of ``case["vocab"]`` rows and its AdamW optimizer."""
    import torch

    from smoothie_pl.models import DenoiserConfig
    from smoothie_pl.module import SmoothieModule

    torch.manual_seed(case.get("seed", 0))
    bf16 = case["precision"] == "bf16"
    module = SmoothieModule(
        target_length=case["length"], source_length=case["length"], denoiser=DenoiserConfig(**case["denoiser"]),
        vocabulary=list(range(min(case["vocab"], 30522))), vocab_attention=case["impl"],
        vocab_dtype="bfloat16" if bf16 else "float32", warmup_steps=0, lr=1e-3,
        compile_denoiser=case.get("compile", False),
    )
    if case["vocab"] > module.embedding_matrix.shape[0]:  # a synthetic vocabulary larger than MiniLM's
        module.embedding_matrix = torch.randn(case["vocab"], module.embedding_matrix.shape[1])
        module._build_space(torch.arange(case["vocab"]))
    optimizer = module.configure_optimizers()["optimizer"]
    return module, optimizer


def batches(case: dict):
    """Copy-task batches (target = source) of random rows, so a loss curve can fall."""
    import torch

    generator = torch.Generator().manual_seed(case.get("seed", 0))
    while True:
        ids = torch.randint(0, min(case["vocab"], 30522), (case["batch"], case["length"]), generator=generator)
        yield {"target_ids": ids, "source_ids": ids, "source_mask": torch.ones_like(ids, dtype=torch.bool)}


def training_step(module, optimizer, batch, generator, bf16: bool) -> float:
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = module.diffusion_loss(batch, generator)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def matmul_peak(dtype_name: str) -> float:
    """FLOP/s of a large square matmul in this process: the machine's practical ceiling."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(PEAK_MATMUL, PEAK_MATMUL).to(dtype), torch.randn(PEAK_MATMUL, PEAK_MATMUL).to(dtype)
    a @ b
    seconds = min(harness.timed(lambda: a @ b) for _ in range(3))
    return 2 * PEAK_MATMUL**3 / seconds


def measure(case: dict) -> dict:
    if "curves" in case:  # several loss curves in one worker: they need no fresh heap, only time
        return {"curves": [measure_one(curve) for curve in case["curves"]]}
    return measure_one(case)


def measure_one(case: dict) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    module, optimizer = build(case)
    data, generator = batches(case), torch.Generator().manual_seed(1)
    bf16 = case["precision"] == "bf16"
    if case.get("curve"):
        return {"losses": [training_step(module, optimizer, next(data), generator, bf16) for _ in range(case["steps"])]}
    # Warm-up: optimizer state, allocator, and the compilation of a compiled denoiser.
    first_step = harness.timed(lambda: training_step(module, optimizer, next(data), generator, bf16))
    steps = [next(data) for _ in range(case["steps"])]
    with harness.PeakMemory() as memory:
        seconds = harness.timed(lambda: [training_step(module, optimizer, b, generator, bf16) for b in steps])
    with FlopCounterMode(display=False) as counter:
        training_step(module, optimizer, steps[0], generator, bf16)
    tokens = case["batch"] * case["length"] * case["steps"]
    flops = counter.get_total_flops() * case["steps"]
    return {
        "seconds": seconds, "first_step_seconds": first_step, "tokens_per_s": tokens / seconds,
        "extra_bytes": memory.extra_bytes,
        "flops_per_s": flops / seconds, "peak_flops_per_s": matmul_peak("bfloat16" if bf16 else "float32"),
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
    return [
        ("library vs literal, demo model", {**demo, "precision": "bf16"}, impls),
        ("fp32 vs bf16 autocast, demo model", {**demo, "impl": "streaming"}, precisions),
        ("eager vs torch.compile, demo model", {**demo, "precision": "bf16", "impl": "streaming"},
         [{"compile": False}, {"compile": True}]),
        ("library vs literal, paper-size model", {**paper, "precision": "bf16"}, impls),
        ("V = 131,072, 8,192 positions", big_vocab, [{}]),
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
        measured = harness.interleaved(__file__, [case], variants, args.rounds)
        records += measured
        base = measured[0].get("tokens_per_s")
        for record in measured:
            rows.append([
                title, record.get("impl") + (" + compile" if record.get("compile") else ""), record.get("precision"),
                f"{record['vocab']:,}",
                f"{record['batch']}x{record['length']}",
                f"{record.get('tokens_per_s', float('nan')):,.0f}", harness.ratio(record.get("tokens_per_s"), base),
                harness.gib(record.get("extra_bytes")),
                f"{record.get('flops_per_s', 0) / 1e9:.0f} / {record.get('peak_flops_per_s', 0) / 1e9:.0f}",
                record.get("error") or compile_note(record),
            ])
    headers = ["comparison", "vocab op", "precision", "V", "batch x L", "tokens/s", "speed-up over the first row",
               "extra GiB", "GFLOP/s achieved / matmul peak", "note"]
    measured_curves = harness.run_worker(__file__, {"curves": curve_cases(args.tiny)})
    curves = measured_curves.get("curves", [measured_curves] * len(curve_cases(args.tiny)))
    curve_rows = [[case["precision"], case["seed"], *summarise_curve(curve)] for case, curve in zip(curve_cases(args.tiny), curves)]
    table = harness.markdown_table(headers, rows) + "\n\nLoss curves (copy task, demo model):\n\n" + harness.markdown_table(
        ["precision", "seed", "first loss", "mean of last 10", "min"], curve_rows
    )
    return table, {"records": records, "curves": curves}


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
    harness.main(__doc__.splitlines()[0], measure, run)
