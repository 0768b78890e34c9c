"""Predictions are never overwritten silently; an interrupted predict resumes; evaluation batches shard once each."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from smoothie_pl.callbacks import JsonlPredictionWriter
from smoothie_pl.callbacks.prediction_writer import read_records
from smoothie_pl.data.samplers import BatchShardSampler

from .conftest import PAIRS
from .test_module import pairs_data, tiny_module
from .test_resume import write_config

ROOT = Path(__file__).resolve().parents[1]


class Interrupt(Callback):
    """Stands in for a killed job: fails after ``batches`` predict batches were written."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx + 1 == self.batches:
            raise RuntimeError("interrupted")


def predict(word_model, pairs_dir, root, *callbacks, **writer_options):
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=root,
        callbacks=[JsonlPredictionWriter(**writer_options), *callbacks],
    )
    torch.manual_seed(0)  # the same weights in every call
    module = tiny_module(word_model, sampling={"steps": 2})
    trainer.predict(module, datamodule=pairs_data(pairs_dir, word_model, eval_batch_size=2), return_predictions=False)


def test_batch_shards_cover_each_index_once_in_single_process_batches():
    dataset = list(range(7))  # batches [0, 1] [2, 3] [4, 5] [6]
    assert list(BatchShardSampler(dataset, 2, num_replicas=2, rank=0)) == [0, 1, 4, 5]
    assert list(BatchShardSampler(dataset, 2, num_replicas=2, rank=1)) == [2, 3, 6]
    assert list(BatchShardSampler(dataset, 2, num_replicas=3, rank=2)) == [4, 5]
    # Done batches are left out; a batch done only in part is predicted again.
    assert list(BatchShardSampler(dataset, 2, skip={0, 1, 2})) == [2, 3, 4, 5, 6]


def test_an_existing_prediction_file_is_refused_and_left_unchanged(word_model, pairs_dir, tmp_path):
    output = tmp_path / "predictions.jsonl"
    output.write_text('{"index": 0, "prediction": "mine"}\n')
    with pytest.raises(FileExistsError, match="predictions.jsonl already exists.*'resume'.*'overwrite'"):
        predict(word_model, pairs_dir, tmp_path)
    assert output.read_text() == '{"index": 0, "prediction": "mine"}\n'
    assert list(tmp_path.glob("*.part*")) == []


def test_interrupted_predict_resumes_to_each_index_once(word_model, pairs_dir, tmp_path):
    predict(word_model, pairs_dir, tmp_path / "whole")
    whole = (tmp_path / "whole/predictions.jsonl").read_text()
    assert [record["index"] for record in map(json.loads, whole.splitlines())] == list(range(len(PAIRS)))

    root = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="interrupted"):
        predict(word_model, pairs_dir, root, Interrupt(batches=2))
    (part,) = root.glob("predictions.jsonl.part0-*")
    assert [record["index"] for record in read_records(part)] == [0, 1, 2, 3]
    with part.open("a") as out:  # a kill in the middle of the third batch's write
        out.write('{"index": 4, "sour')
    with pytest.raises(FileExistsError, match="part files"):
        predict(word_model, pairs_dir, root)

    predict(word_model, pairs_dir, root, if_exists="resume")
    # Whole batches keep their noise, so the resumed file equals the uninterrupted one.
    assert (root / "predictions.jsonl").read_text() == whole
    assert list(root.glob("*.part*")) == []
    predict(word_model, pairs_dir, root, if_exists="resume")  # nothing left to do: the file stays
    assert (root / "predictions.jsonl").read_text() == whole


def test_overwrite_replaces_the_file(word_model, pairs_dir, tmp_path):
    (tmp_path / "predictions.jsonl").write_text('{"index": 0, "prediction": "old"}\n')
    (tmp_path / "predictions.jsonl.part3").write_text('{"index": 5, "prediction": "stale"}\n')
    predict(word_model, pairs_dir, tmp_path, if_exists="overwrite")
    records = read_records(tmp_path / "predictions.jsonl")
    assert [record["index"] for record in records] == list(range(len(PAIRS)))
    assert [record["source"] for record in records] == [source for source, _ in PAIRS]
    assert list(tmp_path.glob("*.part*")) == []


def test_resuming_predictions_of_other_sources_is_refused(word_model, pairs_dir, tmp_path):
    (tmp_path / "predictions.jsonl").write_text('{"index": 1, "source": "not in the split", "prediction": "x"}\n')
    with pytest.raises(ValueError, match="index 1 was made for another source"):
        predict(word_model, pairs_dir, tmp_path, if_exists="resume")


def test_a_corrupt_line_inside_a_prediction_file_is_named(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(ValueError, match=r"predictions.jsonl:2: not a prediction record"):
        read_records(path)


def test_a_rank_without_a_metric_batch_is_refused_before_it_would_hang(word_model, pairs_dir):
    data = pairs_data(pairs_dir, word_model, eval_batch_size=8)  # 8 pairs: one batch for two ranks
    data.trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    with pytest.raises(ValueError, match="validation split has 8 pairs, 1 batch.*fewer than the 2 ranks"):
        data.val_dataloader()


class SlowPredict(Callback):
    """Slows predict so that it can be killed between batches."""

    def on_predict_batch_end(self, *args, **kwargs) -> None:
        time.sleep(1.0)


@pytest.mark.slow
def test_a_killed_predict_resumes_to_the_uninterrupted_file(word_model, pairs_dir, tmp_path):
    slow = {"class_path": "tests.test_prediction_writer.SlowPredict"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "PYTHONWARNINGS": "ignore"}
    outputs = {}
    for name in ("whole", "killed"):
        data = {"eval_batch_size": 2}
        config = write_config(tmp_path / f"{name}.yaml", word_model, pairs_dir, tmp_path / name, {}, data, [slow])
        # No checkpoint: seed_everything makes both runs build the same weights.
        command = [sys.executable, "-m", "smoothie_pl.cli", "predict", "--config", str(config)]
        if name == "killed":
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while not any(read_records(part) for part in (tmp_path / name).glob("*.part*")):
                assert process.poll() is None and time.monotonic() < deadline, "predict ended before it was killed"
                time.sleep(0.1)
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert not (tmp_path / name / "predictions.jsonl").exists()
            command += ["--prediction_writer.if_exists", "resume"]
        subprocess.run(command, env=env, check=True, capture_output=True)
        outputs[name] = (tmp_path / name / "predictions.jsonl").read_text()
    assert [record["index"] for record in map(json.loads, outputs["killed"].splitlines())] == list(range(len(PAIRS)))
    assert outputs["killed"] == outputs["whole"]
