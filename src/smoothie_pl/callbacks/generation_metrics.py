"""Text metrics of generations on a fixed validation subset, logged as ``val/<metric>``.

The diffusion loss says little about text quality, so checkpoints are better
chosen on a generation metric: with this callback ``ModelCheckpoint(monitor=
"val/sacrebleu", mode="max")`` works like any validation metric.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from smoothie_pl.callbacks.trigger import ValidationTrigger
from smoothie_pl.io import write_jsonl_atomically
from smoothie_pl.metrics.sets import TextMetrics

FIELDS = ("index", "source", "reference", "prediction")


class GenerationMetrics(Callback):
    """Generates for the first ``num_examples`` validation pairs and logs the metric set.

    Runs at the end of the first validation batch, when Lightning's EMA callback
    has its weights swapped in whatever the callbacks' order, so the numbers are
    those of the weights that get checkpointed. Skipped during the sanity check.
    Needs a datamodule with ``dataset("validation").pairs`` (every
    :class:`~smoothie_pl.data.base.Seq2SeqDataModule`).

    Args:
        metric_set: a name of :data:`smoothie_pl.metrics.METRIC_SETS` (``None``:
            the model's ``evaluation.metric_set``); each metric is logged as ``val/<name>``,
            the tracked one on the progress bar and also as ``val/tracked``, so one
            ``ModelCheckpoint(monitor="val/tracked", mode="max")`` serves every task.
        metric_options: keyword arguments of :class:`TextMetrics` (e.g.
            ``bertscore_model``), without which model-based metrics are skipped
            (``None`` with ``metric_set=None``: the model's ``evaluation.metric_options``).
        num_examples: the first pairs of the validation split that are generated.
        steps, seed, batch_size: passed to ``generate`` (``None``: the model's
            ``sampling.steps`` and ``seed``), so every run sees the same noise.
        every_n_steps: run at a validation only when this many optimizer steps
            have passed since the last run (``None``: every validation). In between,
            ``trainer.callback_metrics`` keeps the last values.
        show: rows of the example table printed with rich on rank zero (0: none).

    Every run writes ``examples_step{N}.jsonl`` (index, source, reference,
    prediction) to ``trainer.log_dir`` and sends a markdown table to loggers whose
    ``experiment`` has ``add_text`` (TensorBoard's ``SummaryWriter``).

    Under DDP the subset is cut into blocks of ``batch_size`` pairs dealt to the
    ranks in turn, each generated with the noise of its position, so the texts
    are those of a single process; the metrics' states are tensors that
    torchmetrics gathers across ranks at ``compute``, so every rank logs the
    single-process corpus score, and the predictions are gathered to rank zero
    for the table.
    """

    def __init__(
        self,
        metric_set: str | None = None,
        metric_options: dict | None = None,
        num_examples: int = 32,
        steps: int | None = None,
        seed: int | None = None,
        batch_size: int = 64,
        every_n_steps: int | None = None,
        show: int = 4,
    ) -> None:
        if num_examples <= 0:
            raise ValueError(f"generation_metrics.num_examples must be positive, got {num_examples}")
        self.metrics = TextMetrics(metric_set, **(metric_options or {})) if metric_set else None
        self.metric_options = metric_options
        self.num_examples = num_examples
        self.steps = steps
        self.seed = seed
        self.batch_size = batch_size
        self.trigger = ValidationTrigger(every_n_steps)
        self.show = show

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Take the model's metric set if none was given; fail before training when there is no split to read."""
        if self.metrics is None:
            evaluation = pl_module.evaluation
            options = self.metric_options if self.metric_options is not None else evaluation.metric_options
            self.metrics = TextMetrics(evaluation.metric_set, **(options or {}))
        if stage in ("fit", "validate") and not hasattr(trainer.datamodule, "dataset"):
            raise ValueError(
                "GenerationMetrics reads its pairs from `trainer.datamodule.dataset('validation')`: "
                "pass a Seq2SeqDataModule (e.g. JsonlDataModule) as the datamodule"
            )

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not self.trigger.due(trainer, batch_idx, dataloader_idx):
            return
        pairs = trainer.datamodule.dataset("validation").pairs[: self.num_examples]
        starts = range(trainer.global_rank * self.batch_size, len(pairs), trainer.world_size * self.batch_size)
        indices = [index for start in starts for index in range(start, min(start + self.batch_size, len(pairs)))]
        sources = [pairs[i].source for i in indices]
        references = [pairs[i].target for i in indices]
        predictions = []
        options = {"steps": self.steps, "seed": self.seed, "batch_size": self.batch_size}
        with trainer.precision_plugin.forward_context():
            for start in starts:
                block = [pair.source for pair in pairs[start : start + self.batch_size]]
                predictions += pl_module.generate(block, first_index=start, **options)

        self.metrics.to(pl_module.device)
        self.metrics.reset()
        self.metrics.update(sources=sources, predictions=predictions, references=references)
        scores = self.metrics.compute()  # gathers the states of every rank
        for name, value in scores.items():
            # sync_dist is then a no-op average of equal values; it keeps Lightning's DDP warning quiet.
            pl_module.log(f"val/{name}", value, batch_size=1, sync_dist=True, prog_bar=name == self.metrics.tracked)
            if name == self.metrics.tracked:
                pl_module.log("val/tracked", value, batch_size=1, sync_dist=True)

        rows = [dict(zip(FIELDS, row)) for row in zip(indices, sources, references, predictions)]
        if trainer.world_size > 1:
            gathered: list = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = sorted((row for part in gathered for row in part), key=lambda row: row["index"])
        directory = Path(trainer.log_dir)  # a broadcast: every rank must ask
        if trainer.is_global_zero:
            summary = ", ".join(f"{name} {float(value):.4g}" for name, value in scores.items())
            self._publish(trainer, directory, rows, f"{len(pairs)} validation pairs: {summary}")

    def _publish(self, trainer: L.Trainer, directory: Path, rows: list[dict], summary: str) -> None:
        """Example table to the log directory, the console and table-capable loggers.

        The scores are the table's caption, so a log without a progress bar (a file, CI) keeps them.
        """
        step = trainer.global_step
        write_jsonl_atomically(directory / f"examples_step{step}.jsonl", rows)

        if self.show > 0:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"validation examples, step {step}", caption=summary, show_lines=True)
            for field in FIELDS[1:]:
                table.add_column(field, overflow="fold")
            for row in rows[: self.show]:
                table.add_row(*(row[field] for field in FIELDS[1:]))
            Console().print(table)

        markdown = "| source | reference | prediction |\n|---|---|---|\n" + "\n".join(
            "| " + " | ".join(_escape(row[field]) for field in FIELDS[1:]) + " |" for row in rows
        )
        for logger in trainer.loggers:
            if hasattr(logger.experiment, "add_text"):
                logger.experiment.add_text("val/examples", markdown, step)


def _escape(text: str) -> str:
    """Keep a text inside its markdown table cell (and show empty generations as such)."""
    return text.replace("|", "\\|").replace("\n", " ") or "*(empty)*"
