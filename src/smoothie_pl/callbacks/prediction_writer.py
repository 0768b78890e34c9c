"""Writes ``predict`` outputs as jsonl, one line per source in dataset order, never over a file silently.

Every rank appends each finished batch to its own part file beside the output
(``predictions.jsonl.part<rank>-<random>``), so an interrupted run keeps what it had
done. When predict ends, rank zero merges the parts (and, when resuming, the
existing file) by ``index``, writes the output atomically and removes the parts.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from smoothie_pl.errors import OutputExistsError, OutputMismatchError
from smoothie_pl.io import write_jsonl_atomically

IF_EXISTS = ("error", "overwrite", "resume")


def prediction_records(
    batch: dict, predictions: list[str], candidates: list[list[str]] | None = None
) -> list[dict[str, Any]]:
    """The records this writer writes for a predict batch, one per source (a ``reference`` where the data has one)."""
    records = []
    for row, index in enumerate(batch["index"].tolist()):
        record = {"index": index, "source": batch["source"][row]}
        if batch["reference"][row] is not None:  # inference-only data has none
            record["reference"] = batch["reference"][row]
        record["prediction"] = predictions[row]
        if candidates is not None:
            record["candidates"] = candidates[row]
        records.append(record)
    return records


def read_records(path: Path) -> list[dict]:
    """Records of a predictions or part file; a cut-off last line (a killed writer) is ignored."""
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: the write was interrupted
                break
            raise OutputMismatchError(f"{path}:{number}: not a prediction record ({err.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("index"), int):
            raise OutputMismatchError(f"{path}:{number}: a prediction record needs an integer 'index'")
        records.append(record)
    return records


class JsonlPredictionWriter(BasePredictionWriter):
    """Each line holds ``index``, ``source``, ``reference`` and ``prediction``.

    Args:
        output: the jsonl file; a relative path is placed under the trainer's
            ``default_root_dir``.
        if_exists: what to do when ``output`` (or an interrupted run's part
            files) already exists: ``"error"`` refuses before generating
            anything, ``"overwrite"`` replaces it when the new file is complete,
            ``"resume"`` keeps its records and generates only the missing ones.
    """

    def __init__(self, output: str = "predictions.jsonl", if_exists: str = "error") -> None:
        super().__init__(write_interval="batch")
        if if_exists not in IF_EXISTS:
            raise ValueError(f"prediction_writer.if_exists must be one of {IF_EXISTS}, got {if_exists!r}")
        self.output = output
        self.if_exists = if_exists
        self._part: Path | None = None

    def resolve_output(self, trainer) -> Path:
        path = Path(self.output)
        return path if path.is_absolute() else Path(trainer.default_root_dir) / path

    def part_files(self, path: Path) -> list[Path]:
        return sorted(path.parent.glob(path.name + ".part*"))

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        path = self.resolve_output(trainer)
        found = [file for file in (path, *self.part_files(path)) if file.exists()]
        if found and self.if_exists == "error":
            raise OutputExistsError(
                f"{found[0]} already exists{' (an interrupted predict left part files)' if found[0] != path else ''}; "
                "set prediction_writer.if_exists to 'resume' to complete it or 'overwrite' to replace it"
            )
        if self.if_exists == "resume" and found:
            done = self._check_against_data(trainer, [record for file in found for record in read_records(file)])
            trainer.datamodule.predict_skip = done
        trainer.strategy.barrier("prediction_writer_checked")  # every rank read the old files before any is removed
        if trainer.is_global_zero:
            for leftover in path.parent.glob(path.name + ".tmp*"):  # a merge killed before its rename
                leftover.unlink()
        if self.if_exists == "overwrite" and trainer.is_global_zero:
            for part in self.part_files(path):
                part.unlink()
        trainer.strategy.barrier("prediction_writer_ready")
        path.parent.mkdir(parents=True, exist_ok=True)
        # A new part per run and rank: never appended after a killed writer's cut-off line.
        self._part = path.with_name(f"{path.name}.part{trainer.global_rank}-{secrets.token_hex(4)}")

    @staticmethod
    def _check_against_data(trainer, records: list[dict]) -> frozenset[int]:
        """Indices already predicted, after checking they were predicted for the same sources."""
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "predict_skip"):
            raise TypeError("prediction_writer.if_exists='resume' needs a Seq2SeqDataModule (it skips done indices)")
        pairs = datamodule.dataset(datamodule.predict_split).pairs
        for record in records:
            index = record["index"]
            if not 0 <= index < len(pairs) or pairs[index].source != record.get("source"):
                raise OutputMismatchError(
                    f"cannot resume: the prediction for index {index} was made for another source than the "
                    f"{datamodule.predict_split} split's; set prediction_writer.if_exists to 'overwrite'"
                )
        return frozenset(record["index"] for record in records)

    def write_on_batch_end(self, trainer, pl_module, prediction: list[dict[str, Any]], *args: Any) -> None:
        lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in prediction)
        with self._part.open("a", encoding="utf-8") as out:  # one write per batch: a kill loses at most this batch
            out.write(lines)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """After a successful predict (never after an exception): merge every part into the output."""
        if stage != "predict":
            return
        trainer.strategy.barrier("prediction_writer_parts_written")
        if trainer.is_global_zero:
            path = self.resolve_output(trainer)
            sources = self.part_files(path)
            if self.if_exists == "resume" and path.exists():
                sources.insert(0, path)
            records = {record["index"]: record for file in sources for record in read_records(file)}
            write_jsonl_atomically(path, [records[index] for index in sorted(records)])
            for part in self.part_files(path):
                part.unlink()
            print(f"wrote {len(records)} predictions to {path}")
        trainer.strategy.barrier("prediction_writer_merged")
