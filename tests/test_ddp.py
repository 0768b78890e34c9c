"""Two CPU processes (DDP over gloo) give what one process gives.

Each rank draws its own training noise; validation loss, generation metrics
and test metrics cover the whole split and equal the single-process values;
predict writes every index once, in order, for a split of odd size. With the
same noise per example, two ranks of batch b train the weights one process of
batch 2b trains.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from smoothie_pl.module import SmoothieModule, seeded_generator

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


class PerExampleNoise(SmoothieModule):
    """Training noise seeded by (seed, step, dataset index) of each example instead of (seed, rank, step, batch).

    A test-only stream: under it a batch split over ranks draws exactly the noise the
    whole batch draws on one process, so weights can be compared across world sizes.
    The library keeps its per-rank streams.
    """

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = []
        for row, index in enumerate(batch["index"].tolist()):
            example = {key: value[row : row + 1] for key, value in batch.items() if torch.is_tensor(value)}
            generator = seeded_generator(self.device, self.hparams.seed, self.global_step, index)
            losses.append(self.diffusion_loss(example, generator))
        return torch.stack(losses).mean()  # every example has L x d terms: the mean of means is the batch mean


def trained_weights(world: int, batch_size: int, word_model: str, pairs_dir: Path, steps: int) -> dict:
    import lightning as L

    from .test_module import TINY, pairs_data

    torch.manual_seed(0)
    module = PerExampleNoise(
        embedding=word_model, denoiser=TINY, target_length=8, source_length=10, optim={"lr": 1e-3, "warmup_steps": 0}
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=world, strategy="ddp_spawn" if world > 1 else "auto", max_steps=steps,
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=pairs_data(pairs_dir, word_model, batch_size=batch_size))
    return {name: value.clone() for name, value in module.state_dict().items()}


@pytest.mark.slow
def test_two_ranks_of_batch_b_train_the_weights_one_process_of_batch_2b_trains(word_model, pairs_dir):
    # 8 pairs: 2 steps an epoch either way, so 3 steps cross an epoch boundary. Per rank the shuffle sampler
    # deals every other index of the one permutation, so each step sees the same 4 examples on both setups.
    # Tolerance: the same fp32 sums in another order (DDP's all-reduce), then 3 AdamW steps: atol 1e-5.
    start = trained_weights(1, 4, word_model, pairs_dir, steps=0)
    single = trained_weights(1, 4, word_model, pairs_dir, steps=3)
    ranks = trained_weights(2, 2, word_model, pairs_dir, steps=3)
    moved = max((single[name] - start[name]).abs().max().item() for name in single if name.startswith("denoiser"))
    assert moved > 1e-3  # the steps changed the weights far beyond the tolerance
    for name, value in single.items():
        torch.testing.assert_close(ranks[name], value, rtol=1e-4, atol=1e-5, msg=name)
