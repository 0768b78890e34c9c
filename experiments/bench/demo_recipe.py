"""The demo's own training step on real Bible batches, and its decoding cross-entropy alone.

    python experiments/bench/demo_recipe.py          # demo.yaml's model and data, 8 steps per round
    python experiments/bench/demo_recipe.py --tiny   # smoke run (a tiny model, 2 steps)

``train_step.py`` times a copy task at the full target length; this one
builds ``lightning_configs/demo.yaml``'s module and Bible data module (the
decoding cross-entropy, the aligned source, verses of their real lengths) and
compares, interleaved, the demo with ``model.length_from_source``
and ``data.length_buckets`` switched on or off (each pair then models its
source's length plus the margin, in batches of similar lengths). The second
table times the decoding cross-entropy with its backward at the demo size:
the checkpointed path (one pass for the loss, a recomputing pass and its
backward) against the one-pass path that ``decoding_loss_weight`` uses.
Steps run under the autocast the demo's trainer takes (bf16 where the CPU has
bf16 units, see ``smoothie_pl.precision``). ``--baseline-src DIR`` adds the
windowed demo step of another checkout (``DIR`` is its ``src/``, e.g. a
``git worktree`` of an earlier commit), interleaved with the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from train_step import TINY  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "lightning_configs" / "demo.yaml"


def build(case: dict):
    """The demo's module and data module, with the case's window and bucketing, and the model's optimiser."""
    import torch

    from smoothie_pl.data import BibleDataModule
    from smoothie_pl.module import SmoothieModule

    config = yaml.safe_load(DEMO_CONFIG.read_text())
    model = {**config["model"], "length_from_source": case.get("length_from_source")}
    data_options = {**config["data"]["init_args"], "data_dir": case["data_dir"], "length_buckets": case.get("buckets", False)}
    if case.get("tiny"):
        model["denoiser"] = TINY
        data_options["batch_size"] = 4
    data = BibleDataModule(**data_options, target_length=model["target_length"], source_length=model["source_length"])
    data.prepare_data()
    data.setup("fit")
    torch.manual_seed(0)
    module = SmoothieModule(**model, vocabulary=data.vocabulary())
    return module, module.configure_optimizers()["optimizer"], data


def measure_step(case: dict) -> dict:
    import torch

    from smoothie_pl.precision import fast_bf16

    module, optimizer, data = build(case)
    loader, generator = iter(data.train_dataloader()), torch.Generator().manual_seed(1)

    def step(batch) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast_bf16("cpu")):  # the trainer's bf16-mixed
            loss = module.diffusion_loss(batch, generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(next(loader))  # warm-up: optimiser state, allocator
    batches = [next(loader) for _ in range(case["steps"])]
    widths = [module.pipeline.target_window(batch["source_mask"])[0] for batch in batches]
    seconds = harness.timed(lambda: [step(batch) for batch in batches])
    return {"seconds": seconds, "seconds_per_step": seconds / case["steps"], "mean_width": sum(widths) / len(widths)}


def measure_cross_entropy(case: dict) -> dict:
    """Forward and backward of the decoding cross-entropy over ``positions`` predictions and ``vocab`` rows."""
    import torch

    from smoothie_pl.diffusion.embedding_losses import decoding_cross_entropy, prediction_decoding_loss
    from smoothie_pl.diffusion.spaces import SmoothieSpace

    generator = torch.Generator().manual_seed(0)
    space = SmoothieSpace(torch.randn(case["vocab"], 384, generator=generator))
    predicted = torch.randn(1, case["positions"], 384, generator=generator, requires_grad=True)
    target_ids = torch.randint(0, case["vocab"], (1, case["positions"]), generator=generator)
    vocabulary = torch.arange(case["vocab"])

    def checkpointed():
        loss = decoding_cross_entropy(predicted[0], target_ids[0], space.embeddings, 1.0, 0.0, space.sigma0, 0, 1024)
        loss.mean().backward()

    def one_pass():
        prediction_decoding_loss(space, vocabulary, predicted, target_ids, None, 1024).backward()

    run = checkpointed if case["path"] == "checkpointed" else one_pass
    run()  # warm-up
    return {"seconds": min(harness.timed(run) for _ in range(3))}


def measure(case: dict) -> dict:
    return measure_cross_entropy(case) if "path" in case else measure_step(case)


def run(args) -> tuple[str, dict]:
    data_dir = str(args.data_dir.resolve())
    step_case = {"data_dir": data_dir, "steps": 2 if args.tiny else args.steps, "tiny": args.tiny}
    windows = [{}, {"length_from_source": args.margin, "buckets": True}]
    windows += [{**windows[1], "src": args.baseline_src}] if args.baseline_src else []
    steps = harness.interleaved(__file__, [step_case], windows, args.rounds, slow_seconds=10_000)
    base = steps[0].get("seconds_per_step")
    rows = []
    for record in steps:
        name = "all target positions (the paper's)" if not record.get("buckets") else (
            f"`length_from_source: {args.margin}`, `length_buckets: true`")
        name += harness.baseline_label(record)
        seconds = record.get("seconds_per_step")
        rows.append([name, f"{record.get('mean_width', 0):.1f}", f"{seconds:.2f}" if seconds else record.get("error"),
                     harness.ratio(base, seconds)])
    table = harness.markdown_table(["demo training step", "positions per pair", "s per step", "speed-up"], rows)

    size = {"vocab": 500, "positions": 64} if args.tiny else {"vocab": 9679, "positions": 2048}
    losses = harness.interleaved(__file__, [size], [{"path": "checkpointed"}, {"path": "one pass"}], args.rounds)
    slow = losses[0].get("seconds")
    loss_rows = [[r["path"], f"{r['seconds'] * 1000:.0f}" if "seconds" in r else r.get("error"), harness.ratio(slow, r.get("seconds"))]
                 for r in losses]
    title = f"decoding cross-entropy, forward and backward, {size['positions']:,} x 384 against {size['vocab']:,} rows"
    table += "\n\n" + harness.markdown_table([title, "ms", "speed-up"], loss_rows)
    return table, {"steps": steps, "cross_entropy": losses}


def add_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per round")
    parser.add_argument("--margin", type=int, default=8, help="length_from_source margin of the windowed variant")
    harness.add_baseline_argument(parser)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bible", help="the Bible pairs (made if missing)")


if __name__ == "__main__":
    harness.main(__doc__.splitlines()[0], measure, run, add_arguments)
