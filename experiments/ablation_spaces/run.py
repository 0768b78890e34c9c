"""The paper's space ablation on the Bible task: Smoothie vs Gaussian embedding vs simplex.

Each space is trained with the same denoiser, data, seed and number of steps
(``lightning_configs/demo.yaml`` + ``budget.yaml`` unless ``--config`` says
otherwise), one after another, then evaluated identically: validation
SacreBLEU on the first ``--eval-size`` pairs, the same sampling seed, at every
``--sampling-steps`` and ``--noise-scales``. With several ``--train-seeds``
each space is trained once per seed and the table gives the mean and the
standard deviation over seeds. Writes ``results.md`` (a markdown table),
``results.json`` and ``sacrebleu_vs_steps.png`` into ``--out``.

    python experiments/ablation_spaces/run.py --steps 800 --train-seeds 0 1 2 --out runs/ablation_spaces

Any other ``--key=value`` argument is passed to every run's ``smoothie`` CLI.
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    parser.add_argument("--train-seeds", nargs="+", type=int, default=[0], help="training seeds (seed_everything)")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation_spaces"))
    parser.add_argument("--save-checkpoint", action="store_true", help="keep each model as OUT/SPACE/seedN/last.ckpt")
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides  # any other ``--key=value`` goes to every run's CLI, e.g. --model.optim.lr=5e-4
    return args


def train(space: str, seed: int, args: argparse.Namespace):
    """Fit one space from one seed; returns the module (EMA weights, if configured), the data, seconds and loss."""
    configs = args.config or DEFAULT_CONFIGS
    root = args.out / space / f"seed{seed}"
    cli = build_cli(
        [
            *(f"--config={config}" for config in configs),
            f"--seed_everything={seed}",
            f"--model.space={space}",
            # The base config's kernel widths are Smoothie's; the other spaces keep their own schedules.
            *([] if space == "smoothie" else ["--model.schedule=null"]),
            f"--trainer.max_steps={args.steps}",
            f"--trainer.default_root_dir={root}",
            *args.overrides,
        ],
        run=False,
    )
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - start
    if args.save_checkpoint:
        cli.trainer.save_checkpoint(root / "last.ckpt")
    return cli.model, cli.datamodule, seconds, float(cli.trainer.callback_metrics["train/loss"])


def validation_subset(datamodule, size: int) -> tuple[list[str], list[str]]:
    with open(datamodule.files["validation"]) as lines:
        records = [json.loads(line) for _, line in zip(range(size), lines)]
    return [r["src"] for r in records], [r["trg"] for r in records]


def score_key(scale: float, steps: int) -> str:
    """The results' key of one (noise scale, sampling steps) setting, e.g. ``"0.5/20"``."""
    return f"{scale:g}/{steps}"


def evaluate(model, sources: list[str], references: list[str], args: argparse.Namespace) -> dict[str, float]:
    """SacreBLEU for every (noise scale, steps), keyed ``"scale/steps"``; the seed is the same for every space."""
    scores = {}
    for scale in args.noise_scales:
        model.sampler.noise_scale = scale  # kept by generate when steps are given
        for steps in args.sampling_steps:
            metric = SacreBLEU()
            metric.update(model.generate(sources, steps=steps, seed=args.seed), references)
            scores[score_key(scale, steps)] = float(metric.compute())
    return scores


def summarise(runs: list[dict]) -> dict:
    """One space's runs (one per training seed): the mean of every score, its standard deviation, mean time and loss."""
    keys = runs[0]["sacrebleu"]
    spread = statistics.stdev if len(runs) > 1 else (lambda values: 0.0)
    return {
        "runs": runs,
        "sacrebleu": {key: statistics.fmean(run["sacrebleu"][key] for run in runs) for key in keys},
        "sacrebleu_sd": {key: spread([run["sacrebleu"][key] for run in runs]) for key in keys},
        "train_seconds": statistics.fmean(run["train_seconds"] for run in runs),
        "train_loss": statistics.fmean(run["train_loss"] for run in runs),
    }


def markdown_table(results: dict[str, dict], args: argparse.Namespace) -> str:
    columns = [f"{steps} steps" for steps in args.sampling_steps]
    seeds = args.train_seeds
    over = f"mean ± sd over training seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"training seed {seeds[0]}"
    lines = [
        f"Validation SacreBLEU (first {args.eval_size} pairs, sampling seed {args.seed}; {over}) "
        f"after {args.steps} training steps.",
        "",
        "| space | noise scale | " + " | ".join(columns) + " | train loss | train min |",
        "|---|---|" + "---|" * len(columns) + "---|---|",
    ]
    for space, result in results.items():
        for scale in args.noise_scales:
            keys = [score_key(scale, steps) for steps in args.sampling_steps]
            cells = [f"{result['sacrebleu'][key]:.2f}" for key in keys]
            if len(seeds) > 1:
                cells = [f"{cell} ± {result['sacrebleu_sd'][key]:.2f}" for cell, key in zip(cells, keys)]
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
            keys = [score_key(scale, steps) for steps in args.sampling_steps]
            axis.errorbar(
                args.sampling_steps, [result["sacrebleu"][key] for key in keys],
                yerr=[result["sacrebleu_sd"][key] for key in keys], fmt=style, marker="o", capsize=3,
                label=f"{space}, noise {scale:g}",
            )
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
        runs = []
        for seed in args.train_seeds:
            model, datamodule, seconds, loss = train(space, seed, args)
            sources, references = validation_subset(datamodule, args.eval_size)
            scores = evaluate(model, sources, references, args)
            runs.append({"seed": seed, "train_seconds": seconds, "train_loss": loss, "sacrebleu": scores})
            print(f"{space}, seed {seed}: {runs[-1]}", flush=True)
        results[space] = summarise(runs)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown_table(results, args))
    plot(results, args, args.out / "sacrebleu_vs_steps.png")
    print(markdown_table(results, args))
    return results


if __name__ == "__main__":
    main()
