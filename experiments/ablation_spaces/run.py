"""The paper's space ablation on the Bible task: Smoothie vs Gaussian embedding vs simplex.

Each space is trained with the same denoiser, data, seed and number of steps
(``lightning_configs/demo.yaml`` + ``budget.yaml`` unless ``--config`` says
otherwise), one after another, then evaluated identically: validation
SacreBLEU on the first ``--eval-size`` pairs, the same sampling seed, at every
``--sampling-steps`` and ``--noise-scales``. Writes ``results.md`` (a markdown
table), ``results.json`` and ``sacrebleu_vs_steps.png`` into ``--out``.

    python experiments/ablation_spaces/run.py --steps 800 --out runs/ablation_spaces

Any other ``--key=value`` argument is passed to every run's ``smoothie`` CLI.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from smoothie_pl.cli import build_cli
from smoothie_pl.metrics import SacreBLEU

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIGS = [HERE.parents[1] / "lightning_configs" / "demo.yaml", HERE / "budget.yaml"]
SPACES = ("smoothie", "gaussian", "simplex")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", type=Path, help="base yaml(s); default demo.yaml + budget.yaml")
    parser.add_argument("--steps", type=int, default=800, help="training steps per space")
    parser.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    parser.add_argument("--sampling-steps", nargs="+", type=int, default=[1, 5, 20])
    parser.add_argument("--noise-scales", nargs="+", type=float, default=[0.5, 1.0])
    parser.add_argument("--eval-size", type=int, default=100, help="first N validation pairs")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, the same for every space")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation_spaces"))
    parser.add_argument("--save-checkpoint", action="store_true", help="keep each space's model as OUT/SPACE/last.ckpt")
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides  # any other ``--key=value`` goes to every run's CLI, e.g. --model.optim.lr=5e-4
    return args


def train(space: str, args: argparse.Namespace):
    """Fit one space; returns the module (EMA weights, if configured), the data and the fit's seconds and loss."""
    configs = args.config or DEFAULT_CONFIGS
    cli = build_cli(
        [
            *(f"--config={config}" for config in configs),
            f"--model.space={space}",
            # The base config's kernel widths are Smoothie's; the other spaces keep their own schedules.
            *([] if space == "smoothie" else ["--model.schedule=null"]),
            f"--trainer.max_steps={args.steps}",
            f"--trainer.default_root_dir={args.out / space}",
            *args.overrides,
        ],
        run=False,
    )
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    if args.save_checkpoint:
        cli.trainer.save_checkpoint(args.out / space / "last.ckpt")
    return cli.model, cli.datamodule, seconds, float(cli.trainer.callback_metrics["train/loss"])


def validation_subset(datamodule, size: int) -> tuple[list[str], list[str]]:
    with open(datamodule.files["validation"]) as lines:
        records = [json.loads(line) for _, line in zip(range(size), lines)]
    return [r["src"] for r in records], [r["trg"] for r in records]


def evaluate(model, sources: list[str], references: list[str], args: argparse.Namespace) -> dict[str, float]:
    """SacreBLEU for every (noise scale, steps), keyed ``"scale/steps"``; the seed is the same for every space."""
    scores = {}
    for scale in args.noise_scales:
        model.sampler.noise_scale = scale  # kept by generate when steps are given
        for steps in args.sampling_steps:
            metric = SacreBLEU()
            metric.update(model.generate(sources, steps=steps, seed=args.seed), references)
            scores[f"{scale:g}/{steps}"] = float(metric.compute())
    return scores


def markdown_table(results: dict[str, dict], args: argparse.Namespace) -> str:
    columns = [f"{steps} steps" for steps in args.sampling_steps]
    lines = [
        f"Validation SacreBLEU (first {args.eval_size} pairs, seed {args.seed}) after {args.steps} training steps.",
        "",
        "| space | noise scale | " + " | ".join(columns) + " | train loss | train min |",
        "|---|---|" + "---|" * len(columns) + "---|---|",
    ]
    for space, result in results.items():
        for scale in args.noise_scales:
            cells = [f"{result['sacrebleu'][f'{scale:g}/{steps}']:.2f}" for steps in args.sampling_steps]
            lines.append(
                f"| {space} | {scale:g} | " + " | ".join(cells)
                + f" | {result['train_loss']:.3f} | {result['train_seconds'] / 60:.1f} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], args: argparse.Namespace, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for space, result in results.items():
        for scale, style in zip(args.noise_scales, ("-", "--", ":", "-.")):
            values = [result["sacrebleu"][f"{scale:g}/{steps}"] for steps in args.sampling_steps]
            axis.plot(args.sampling_steps, values, style, marker="o", label=f"{space}, noise {scale:g}")
    axis.set_xscale("log")
    axis.set_xlabel("sampling steps")
    axis.set_ylabel("validation SacreBLEU")
    axis.set_title(f"diffusion spaces after {args.steps} training steps")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for space in args.spaces:
        model, datamodule, seconds, loss = train(space, args)
        sources, references = validation_subset(datamodule, args.eval_size)
        scores = evaluate(model, sources, references, args)
        results[space] = {"train_seconds": seconds, "train_loss": loss, "sacrebleu": scores}
        print(f"{space}: {results[space]}", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown_table(results, args))
    plot(results, args, args.out / "sacrebleu_vs_steps.png")
    print(markdown_table(results, args))
    return results


if __name__ == "__main__":
    main()
