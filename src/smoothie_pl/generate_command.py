"""``smoothie generate --model PATH --input FILE|- --output FILE|-``: text from a trained model, no config needed.

The model is an exported folder or a checkpoint, loaded offline
(``SmoothieModule.from_pretrained``). Sources come one per line, as plain text
or jsonl with a ``src`` field; the output has one line per source, plain text
or jsonl (``index``, ``source``, ``prediction``). Batches are seeded by their
position, so the texts do not depend on ``--batch_size``. ``--precision auto``
computes as ``smoothie predict`` does when its config names no precision:
bf16-mixed where the device multiplies bf16 natively, fp32 elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from smoothie_pl.data.inference import read_sources, read_sources_file
from smoothie_pl.errors import ConfigError, OutputExistsError
from smoothie_pl.io import write_text_atomically
from smoothie_pl.precision import PRECISIONS, default_precision, precision_autocast

STDIO = "-"
SHOWN_STEPS_DEFAULT = 3


def positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smoothie generate",
        description="Text from a trained model (an exported folder or a checkpoint), without a config.",
    )
    parser.add_argument("--model", required=True, help="an exported model folder or a .ckpt file")
    parser.add_argument("--input", required=True, help="sources, one per line (text or jsonl with 'src'); - is stdin")
    parser.add_argument("--output", required=True, help="where the generations go; - is stdout")
    parser.add_argument(
        "--format", choices=("text", "jsonl"), help="output format (default: jsonl for a .jsonl output, else text)"
    )
    parser.add_argument("--steps", type=positive_int, help="sampling steps (default: the model's sampling.steps)")
    parser.add_argument("--seed", type=int, help="seed of the diffusion noise (default: the model's seed)")
    parser.add_argument("--batch_size", type=positive_int, default=64, help="sources per batch")
    parser.add_argument("--candidates", type=positive_int, help="samples per source, the MBR choice is written")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    parser.add_argument(
        "--precision", choices=("auto", *PRECISIONS), default="auto",
        help="auto: bf16-mixed where the device has bf16 units, else 32-true (as fit and predict choose)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output or trajectory file")
    parser.add_argument(
        "--show-steps", "--show_steps", dest="show_steps", type=positive_int, nargs="?", const=SHOWN_STEPS_DEFAULT,
        default=0, metavar="N",
        help=f"draw the text at every step for the first N sources (default N: {SHOWN_STEPS_DEFAULT})",
    )
    parser.add_argument("--trajectory", help="write every source's text at every step to this jsonl file")
    return parser


def choose_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def refuse_existing(path: str | None, overwrite: bool, option: str) -> None:
    if path and path != STDIO and Path(path).exists() and not overwrite:
        raise OutputExistsError(f"{option} {path} already exists; pass --overwrite to replace it")


def read_input(name: str) -> list[str]:
    return read_sources(sys.stdin, "<stdin>") if name == STDIO else read_sources_file(name)


def format_output(records: list[dict], output_format: str) -> str:
    if output_format == "jsonl":
        return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    return "".join(record["prediction"] + "\n" for record in records)


def write_output(name: str, text: str) -> None:
    if name == STDIO:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomically(Path(name), text)


def render_trajectory(console: Console, record: dict) -> None:
    """One table per source: the text at every step, words that changed since the step before highlighted."""
    console.print(Text(f"source {record['index']}: ", style="bold") + Text(record["source"]))
    table = Table(show_lines=False)
    table.add_column("step", justify="right")
    table.add_column("t", justify="right")
    table.add_column("decoded e0", overflow="fold")
    previous: list[str] = []
    for step in record["steps"]:
        words = step["text"].split()
        line = Text()
        for position, word in enumerate(words):
            changed = position >= len(previous) or previous[position] != word
            line.append(word, style="bold yellow" if changed else None)
            line.append(" ")
        table.add_row(str(step["step"]), f"{step['t']:.3f}", line)
        previous = words
    console.print(table)


def main(argv: list[str]) -> int:
    arguments = build_parser().parse_args(argv)
    output_format = arguments.format or ("jsonl" if arguments.output.endswith(".jsonl") else "text")
    refuse_existing(arguments.output, arguments.overwrite, "--output")
    refuse_existing(arguments.trajectory, arguments.overwrite, "--trajectory")
    device = choose_device(arguments.device)
    sources = read_input(arguments.input)

    from smoothie_pl.module import SmoothieModule

    model = SmoothieModule.from_pretrained(arguments.model).to(device)
    console = Console(stderr=True)
    precision = default_precision(device) if arguments.precision == "auto" else arguments.precision
    console.print(f"precision {precision} on {device}", highlight=False)
    records, trajectories = [], []
    columns = (TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("generate", total=len(sources))
        for start in range(0, len(sources), arguments.batch_size):
            chunk = sources[start : start + arguments.batch_size]
            record_steps = bool(arguments.trajectory) or start < arguments.show_steps
            with precision_autocast(precision, device):
                result = model.generate(
                    chunk,
                    steps=arguments.steps,
                    seed=arguments.seed,
                    batch_size=arguments.batch_size,
                    candidates=arguments.candidates,
                    first_index=start,
                    trajectory=record_steps,
                )
            texts, steps = result if record_steps else (result, [])
            trajectories += steps
            records += [
                {"index": start + row, "source": source, "prediction": text}
                for row, (source, text) in enumerate(zip(chunk, texts))
            ]
            progress.advance(task, len(chunk))

    for record in trajectories[: arguments.show_steps]:
        render_trajectory(console, record)
    if arguments.trajectory:
        write_text_atomically(Path(arguments.trajectory), format_output(trajectories, "jsonl"))
    write_output(arguments.output, format_output(records, output_format))
    return 0
