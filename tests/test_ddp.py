"""Two CPU processes (DDP over gloo) through the `smoothie` CLI give what one process gives.

Each rank draws its own training noise; validation loss, generation metrics
and test metrics cover the whole split and equal the single-process values;
predict writes every index once, in order, for a split of odd size.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import Callback

from .conftest import PAIRS
from .test_resume import write_config

ROOT = Path(__file__).resolve().parents[1]


class RecordDiffusionTimes(Callback):
    """Writes the diffusion times each rank draws in training to ``<directory>/times_rank<r>.json``."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.times: list = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        noised_input = pl_module.space.noised_input

        def recording(clean, t, generator):
            self.times.append(t.tolist())
            return noised_input(clean, t, generator)

        pl_module.space.noised_input = recording

    def on_train_end(self, trainer, pl_module) -> None:
        (self.directory / f"times_rank{trainer.global_rank}.json").write_text(json.dumps(self.times))


@pytest.fixture(scope="module")
def odd_pairs(tmp_path_factory) -> Path:
    """Eight training pairs; seven validation and test pairs (not divisible by two ranks or by the batch)."""
    directory = tmp_path_factory.mktemp("odd_pairs")
    for split, pairs in (("train", PAIRS), ("validation", PAIRS[:7]), ("test", PAIRS[:7])):
        lines = [json.dumps({"src": source, "trg": target}) for source, target in pairs]
        (directory / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def smoothie(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    result = subprocess.run(
        [sys.executable, "-m", "smoothie_pl.cli", *args], cwd=cwd, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def logged_metrics(directory: Path) -> dict[str, float]:
    """The last value of every metric in the CSV logs under ``directory``."""
    values = {}
    for path in sorted(directory.rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            values.update({key: float(value) for key, value in row.items() if value and key not in ("step", "epoch")})
    return values


def devices(world: int) -> dict:
    return {"devices": world, "strategy": "ddp" if world > 1 else "auto"}


@pytest.mark.slow
def test_two_processes_match_one(word_model, odd_pairs, tmp_path):
    recorder = {"class_path": "tests.test_ddp.RecordDiffusionTimes", "init_args": {"directory": str(tmp_path)}}
    config = write_config(tmp_path / "fit.yaml", word_model, odd_pairs, tmp_path / "fit", devices(2), (), [recorder])
    smoothie("fit", "--config", str(config), "--trainer.max_steps", "2", cwd=tmp_path)
    rank0, rank1 = (json.loads((tmp_path / f"times_rank{rank}.json").read_text()) for rank in (0, 1))
    assert len(rank0) == len(rank1) == 2
    assert all(set(a).isdisjoint(b) for a, b in zip(rank0, rank1)), "ranks drew the same diffusion times"
    checkpoint = tmp_path / "fit/checkpoints/last.ckpt"

    generation = {
        "class_path": "smoothie_pl.callbacks.GenerationMetrics",
        "init_args": {"num_examples": 7, "steps": 2, "batch_size": 2, "show": 0},
    }
    metrics, predictions = {}, {}
    for world in (1, 2):
        root = tmp_path / f"world{world}"
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(root)}}
        trainer = {**devices(world), "limit_val_batches": 1.0, "logger": logger}
        data = {"eval_batch_size": 3}  # batches [0, 1, 2] [3, 4, 5] [6]: rank 0 gets two, rank 1 one
        config = write_config(root.with_suffix(".yaml"), word_model, odd_pairs, root, trainer, data, [generation])
        for subcommand in ("validate", "test", "predict"):
            smoothie(subcommand, "--config", str(config), "--ckpt_path", str(checkpoint), cwd=tmp_path)
        metrics[world] = logged_metrics(root)
        predictions[world] = (root / "predictions.jsonl").read_text()

    names = {"val/loss", "val/sacrebleu", "test/sacrebleu", "test/rougeL", "test/copy_source_sacrebleu"}
    assert names <= set(metrics[1]) and set(metrics[1]) == set(metrics[2])
    assert metrics[2] == pytest.approx(metrics[1], rel=1e-6)  # only the order of a float sum may differ
    records = [json.loads(line) for line in predictions[2].splitlines()]
    assert [record["index"] for record in records] == list(range(7))
    assert [record["source"] for record in records] == [source for source, _ in PAIRS[:7]]
    assert predictions[2] == predictions[1]
