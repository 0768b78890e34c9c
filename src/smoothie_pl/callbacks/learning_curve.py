"""A picture of a run's progress: training loss and validation metrics against the step, written at the end.

A loss curve alone hides whether the model has started to write text; the
validation generation metric (``val/tracked``, from ``GenerationMetrics``)
beside it shows when it does.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info


class LearningCurve(Callback):
    """Records ``train/loss`` every step and the validation metrics after each validation; plots them at fit end.

    Args:
        filename: the PNG, relative to ``trainer.default_root_dir``.
        metrics: validation metrics drawn on the right-hand axis when they were logged.
    """

    def __init__(self, filename: str = "learning_curve.png", metrics: tuple[str, ...] = ("val/loss", "val/tracked")) -> None:
        self.filename = filename
        self.metrics = tuple(metrics)
        self.train: list[tuple[int, float]] = []
        self.validation: dict[str, list[tuple[int, float]]] = {name: [] for name in self.metrics}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.train.append((trainer.global_step, float(loss)))

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for name in self.metrics:
            if name in trainer.callback_metrics:
                self.validation[name].append((trainer.global_step, float(trainer.callback_metrics[name])))

    def state_dict(self) -> dict:
        return {"train": self.train, "validation": self.validation}

    def load_state_dict(self, state_dict: dict) -> None:
        """A resumed run draws the whole curve, not only the part after the restart."""
        self.train = [tuple(point) for point in state_dict["train"]]
        self.validation = {name: [tuple(point) for point in points] for name, points in state_dict["validation"].items()}

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.train:
            return
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.plot(path)
        rank_zero_info(f"learning curve: {path}")

    def plot(self, path: Path) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 4), layout="constrained")
        FigureCanvasAgg(figure)
        loss_axis = figure.subplots()
        steps, losses = zip(*self.train)
        loss_axis.plot(steps, losses, color="0.7", linewidth=0.8, label="train/loss")
        if "val/loss" in self.validation and self.validation["val/loss"]:
            loss_axis.plot(*zip(*self.validation["val/loss"]), "o-", color="C0", label="val/loss")
        loss_axis.set_xlabel("optimiser step")
        loss_axis.set_ylabel("loss (x0 MSE plus any extra terms)")
        loss_axis.set_yscale("log")
        lines, labels = loss_axis.get_legend_handles_labels()
        others = [name for name in self.metrics if name != "val/loss" and self.validation.get(name)]
        if others:
            metric_axis = loss_axis.twinx()
            for colour, name in enumerate(others, start=1):
                metric_axis.plot(*zip(*self.validation[name]), "s-", color=f"C{colour}", label=name)
            metric_axis.set_ylabel(", ".join(others))
            more_lines, more_labels = metric_axis.get_legend_handles_labels()
            lines, labels = lines + more_lines, labels + more_labels
        loss_axis.legend(lines, labels, loc="center right")
        loss_axis.grid(alpha=0.3)
        figure.savefig(path, dpi=100)
