"""`predict` on sources without references: jsonl without `trg` or a text file; `test` refuses them."""

import json

import lightning as L
import pytest

from smoothie_pl.callbacks import JsonlPredictionWriter
from smoothie_pl.data import JsonlDataModule
from smoothie_pl.errors import DataError
from smoothie_pl.module import SmoothieModule

from .conftest import PAIRS

SOURCES = [source for source, _ in PAIRS[:3]]


def data_for(pairs_dir, word_model, test_file):
    files = {"train_file": str(pairs_dir / "train.jsonl"), "validation_file": str(pairs_dir / "validation.jsonl")}
    return JsonlDataModule(
        tokenizer=word_model, target_length=8, source_length=10, eval_batch_size=2, test_file=str(test_file), **files
    )


@pytest.mark.parametrize("kind", ["jsonl", "text"])
def test_predict_writes_predictions_without_references(kind, trained_run, pairs_dir, tmp_path):
    path = tmp_path / f"sources.{kind}"
    lines = [json.dumps({"src": source}) for source in SOURCES] if kind == "jsonl" else SOURCES
    path.write_text("\n".join(lines) + "\n")
    module = SmoothieModule.from_pretrained(trained_run / "checkpoints/last.ckpt")
    data = data_for(pairs_dir, module.hparams.embedding, path)
    writer = JsonlPredictionWriter(output=str(tmp_path / "predictions.jsonl"))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer])
    trainer.predict(module, datamodule=data, return_predictions=False)
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [record["source"] for record in records] == SOURCES
    assert all(set(record) == {"index", "source", "prediction"} for record in records)
    assert [record["prediction"] for record in records] == module.generate(SOURCES, batch_size=2)


def test_test_needs_a_reference_for_every_pair(word_model, pairs_dir, tmp_path):
    path = tmp_path / "sources.jsonl"
    path.write_text(json.dumps({"src": "a"}) + "\n" + json.dumps({"src": "b", "trg": "c"}) + "\n")
    data = data_for(pairs_dir, word_model, path)
    with pytest.raises(DataError, match="test needs a target for every pair, but 1 of the test split's 2 have none"):
        data.setup("test")
    data.setup("predict")
    assert [pair.target for pair in data.dataset("test").pairs] == [None, "c"]


def test_a_training_file_still_needs_targets(word_model, pairs_dir, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"src": "a"}) + "\n")
    data = JsonlDataModule(tokenizer=word_model, train_file=str(path), validation_file=str(path))
    with pytest.raises(DataError, match=r"train.jsonl:1: missing field 'trg'"):
        data.setup("fit")
