"""Where generation quality is lost: one checkpoint (or several, e.g. two spaces) on the same axes.

For each ``--ckpt LABEL=PATH`` on the first ``--pairs`` pairs of ``--split``:

1. one-step denoising: token accuracy and x0 MSE of the first prediction over a
   grid of t (``Diagnostics.measure``, the noised true target as input);
2. SacreBLEU against the number of sampling steps, with and without clamping;
3. along the trajectory of the largest step count, with and without clamping:
   the position-wise token accuracy of the decoded ``e0`` at every step, to see
   whether it rises and then falls (drift), and where.

Writes ``diagnosis.json``, ``diagnosis.md`` and ``diagnosis.png`` into ``--out``.

    python experiments/bible/diagnose.py --ckpt smoothie=runs/demo/checkpoints/last.ckpt \\
        --data-dir data/bible --split test --pairs 100 --out runs/diagnosis
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from smoothie_pl.callbacks.diagnostics import DEFAULT_TIMES, Diagnostics
from smoothie_pl.metrics import SacreBLEU
from smoothie_pl.module import SmoothieModule


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", action="append", required=True, help="LABEL=PATH of a checkpoint; repeatable")
    parser.add_argument("--data-dir", type=Path, default=Path("data/bible"), help="folder with {split}.jsonl")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pairs", type=int, default=100, help="the first N pairs of the split")
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 2, 5, 10, 20, 50, 100, 200])
    parser.add_argument("--grid-power", type=float, help="sample on the grid t_k = (1 - k/N)^p (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/diagnosis"))
    return parser.parse_args(argv)


def read_pairs(path: Path, size: int) -> tuple[list[str], list[str]]:
    with path.open() as lines:
        records = [json.loads(line) for _, line in zip(range(size), lines)]
    return [r["src"] for r in records], [r["trg"] for r in records]


def target_ids(model: SmoothieModule, references: list[str]) -> torch.Tensor:
    """References tokenised as training targets are: no special tokens, cut and padded to ``target_length``."""
    length, pad = model.hparams.target_length, model.tokenizer.pad_token_id
    rows = model.tokenizer(references, add_special_tokens=False)["input_ids"]
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : min(len(row), length)] = torch.tensor(row[:length], dtype=torch.long)
    return ids


def one_step_curves(model: SmoothieModule, sources: list[str], references: list[str]) -> dict[str, list[float]]:
    """MSE and token accuracy of the first prediction at every t of ``DEFAULT_TIMES``."""
    source_ids, source_mask = model.pipeline.tokenize_sources(sources)
    batch = {"target_ids": target_ids(model, references), "source_ids": source_ids, "source_mask": source_mask}
    probe = Diagnostics(max_examples=len(sources), plot=False)
    with torch.no_grad():
        values = torch.stack([probe.measure(model, batch, t)[:2] for t in probe.times]).tolist()
    return {"t": probe.times, "mse": [v[0] for v in values], "acc": [v[1] for v in values]}


def sacrebleu_at(model: SmoothieModule, sources, references, steps: int, seed: int, clamp: bool) -> float:
    model.sampling = dataclasses.replace(model.sampling, clamp=clamp)  # read by the pipeline
    metric = SacreBLEU()
    metric.update(model.generate(sources, steps=steps, seed=seed, batch_size=len(sources)), references)
    return float(metric.compute())


def trajectory_accuracy(model: SmoothieModule, sources, references, steps: int, seed: int, clamp: bool) -> list[float]:
    """Token accuracy (non-pad reference positions) of the decoded ``e0`` after every step."""
    reference_ids = target_ids(model, references)
    pad = model.tokenizer.pad_token_id
    real = reference_ids != pad
    accuracy: list[float] = []

    def record(k: int, t: torch.Tensor, x: torch.Tensor, e0: torch.Tensor) -> None:
        decoded = model.vocabulary[model.space.decode(e0.float())].cpu()
        # A model with length_from_source samples only its windows: the rest is padding.
        decoded = torch.nn.functional.pad(decoded, (0, reference_ids.shape[1] - decoded.shape[1]), value=pad)
        accuracy.append(float((decoded == reference_ids)[real].float().mean()))

    model.sampling = dataclasses.replace(model.sampling, clamp=clamp)
    model.generate(sources, steps=steps, seed=seed, batch_size=len(sources), callback=record)
    return accuracy


def diagnose(model: SmoothieModule, sources, references, args: argparse.Namespace) -> dict:
    result = {"one_step": one_step_curves(model, sources, references), "sacrebleu": {}, "trajectory": {}}
    for clamp in (False, True):
        mode = "clamp" if clamp else "plain"
        result["sacrebleu"][mode] = {
            steps: sacrebleu_at(model, sources, references, steps, args.seed, clamp) for steps in args.steps
        }
        print(f"  SacreBLEU {mode}: {result['sacrebleu'][mode]}", flush=True)
        result["trajectory"][mode] = trajectory_accuracy(model, sources, references, max(args.steps), args.seed, clamp)
    return result


def markdown(results: dict[str, dict], args: argparse.Namespace) -> str:
    grid = "the models' own grid" if args.grid_power is None else f"grid power {args.grid_power:g}"
    lines = [f"First {args.pairs} {args.split} pairs, sampling seed {args.seed}, {grid}.", ""]
    lines += ["One-step token accuracy / x0 MSE of the first prediction at t:", ""]
    times = next(iter(results.values()))["one_step"]["t"]
    lines += ["| model | " + " | ".join(f"{t:g}" for t in times) + " |", "|---|" + "---|" * len(times)]
    for label, result in results.items():
        cells = [f"{a:.2f} / {m:.3f}" for a, m in zip(result["one_step"]["acc"], result["one_step"]["mse"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "SacreBLEU against sampling steps:", ""]
    lines += ["| model | clamp | " + " | ".join(str(s) for s in args.steps) + " |", "|---|---|" + "---|" * len(args.steps)]
    for label, result in results.items():
        for mode, scores in result["sacrebleu"].items():
            lines.append(f"| {label} | {'yes' if mode == 'clamp' else 'no'} | " + " | ".join(f"{scores[s]:.2f}" for s in args.steps) + " |")
    lines += ["", "Token accuracy of the decoded e0 along the trajectory (step: accuracy):", ""]
    for label, result in results.items():
        for mode, curve in result["trajectory"].items():
            last = len(curve) - 1
            marks = sorted({k for k in (0, 1, 2, 4, last // 4, last // 2, 3 * last // 4) if k < last} | {last})
            best = max(range(len(curve)), key=curve.__getitem__)
            lines.append(
                f"- {label}, {'clamped' if mode == 'clamp' else 'plain'}, {len(curve)} steps: "
                + ", ".join(f"{k + 1}: {curve[k]:.3f}" for k in marks) + f"; highest {curve[best]:.3f} at step {best + 1}"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], args: argparse.Namespace, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    one_step, by_steps, along = figure.subplots(1, 3)
    for label, result in results.items():
        one_step.plot(result["one_step"]["t"], result["one_step"]["acc"], marker="o", label=label)
        for mode, style in (("plain", "-"), ("clamp", "--")):
            scores, curve = result["sacrebleu"][mode], result["trajectory"][mode]
            by_steps.plot(args.steps, [scores[s] for s in args.steps], style, marker="o", label=f"{label}, {mode}")
            along.plot(range(1, len(curve) + 1), curve, style, label=f"{label}, {mode}")
    one_step.set(title="one-step token accuracy", xlabel="t")
    by_steps.set(title=f"SacreBLEU ({args.split}, {args.pairs} pairs)", xlabel="sampling steps", xscale="log")
    along.set(title=f"accuracy of decoded e0 along {max(args.steps)} steps", xlabel="step")
    for axis in (one_step, by_steps, along):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sources, references = read_pairs(args.data_dir / f"{args.split}.jsonl", args.pairs)
    results = {}
    for spec in args.ckpt:
        label, _, path = spec.partition("=")
        print(f"{label}: {path}", flush=True)
        model = SmoothieModule.load_from_checkpoint(path, map_location="cpu").eval()
        if args.grid_power is not None:
            model.sampling = dataclasses.replace(model.sampling, grid_power=args.grid_power)
            model.sampler = model.sampling.build_sampler()
        results[label] = diagnose(model, sources, references, args)
    (args.out / "diagnosis.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "diagnosis.md").write_text(markdown(results, args))
    plot(results, args, args.out / "diagnosis.png")
    print(markdown(results, args))
    return results


if __name__ == "__main__":
    main()
