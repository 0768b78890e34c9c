"""Score a predictions file and show examples: ``python -m smoothie_pl.report predictions.jsonl``.

Prints corpus SacreBLEU (13a, 0-100) of the predictions against the raw
references (cased, and lowercased for models with an uncased vocabulary), the
same score for copying the source (the floor a seq2seq model
has to beat on near-copy tasks), and a table of examples.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from smoothie_pl.metrics import SacreBLEU

REQUIRED_FIELDS = ("source", "prediction")


def read_predictions(path: str | Path) -> list[dict]:
    records = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: malformed JSON ({err.msg})") from None
            missing = [field for field in REQUIRED_FIELDS if field not in record]
            if missing:
                raise ValueError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
            records.append(record)
    if not records:
        raise ValueError(f"{path} holds no predictions")
    return records


def corpus_sacrebleu(hypotheses: list[str], references: list[str], lowercase: bool = False) -> float:
    metric = SacreBLEU(lowercase=lowercase)
    metric.update(hypotheses, references)
    return float(metric.compute())


def report(path: str | Path, examples: int = 8, console: Console | None = None) -> dict[str, float]:
    """Scores and an example table; predictions of sources without references are shown, not scored."""
    records = read_predictions(path)
    console = console or Console()
    if not all("reference" in record for record in records):
        show_examples(console, path, records, examples, ("source", "prediction"))
        console.print(f"{path}: not every prediction has a reference; scores skipped")
        return {}
    references = [record["reference"] for record in records]
    scores = {
        "sacrebleu": corpus_sacrebleu([record["prediction"] for record in records], references),
        "sacrebleu_lowercase": corpus_sacrebleu([record["prediction"] for record in records], references, True),
        "copy_source_sacrebleu": corpus_sacrebleu([record["source"] for record in records], references),
    }
    show_examples(console, path, records, examples, ("source", "reference", "prediction"))
    console.print(
        f"SacreBLEU (13a) over {len(records)} pairs: [bold]{scores['sacrebleu']:.2f}[/bold]   "
        f"(lowercased: {scores['sacrebleu_lowercase']:.2f})   "
        f"copying the source scores {scores['copy_source_sacrebleu']:.2f}"
    )
    return scores


def show_examples(console: Console, path, records: list[dict], examples: int, columns: tuple[str, ...]) -> None:
    table = Table(title=f"{min(examples, len(records))} of {len(records)} predictions ({path})", show_lines=True)
    for column in columns:
        table.add_column(column, overflow="fold")
    for record in records[:examples]:
        table.add_row(*(record[column] for column in columns))
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="jsonl written by `smoothie predict`")
    parser.add_argument("--examples", type=int, default=8, help="rows of the example table")
    arguments = parser.parse_args()
    report(arguments.predictions, arguments.examples)


if __name__ == "__main__":
    main()
