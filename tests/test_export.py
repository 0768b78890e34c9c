"""Self-contained models: a checkpoint and its exported folder load offline and generate what the checkpoint does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smoothie_pl.errors import CheckpointError, OutputExistsError
from smoothie_pl.export import export_checkpoint
from smoothie_pl.module import SmoothieModule

from .conftest import PAIRS

SOURCES = [source for source, _ in PAIRS[:4]]


def sampled(module, seed=3, steps=3):
    """Texts and the sampled embeddings (an early model's texts may be empty; its embeddings are not)."""
    encoded = module.source_tokenizer(SOURCES, padding=True, return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()
    embeddings = module.pipeline.sample(ids, mask, torch.Generator().manual_seed(seed), steps=steps)
    return module.generate(SOURCES, steps=steps, seed=seed), embeddings


@pytest.fixture(scope="module")
def reference(trained_run):
    """What Lightning's own loader (with the embedding model on disk) generates from the checkpoint."""
    module = SmoothieModule.load_from_checkpoint(trained_run / "checkpoints/last.ckpt", map_location="cpu").eval()
    return sampled(module)


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    return export_checkpoint(trained_run / "checkpoints/last.ckpt", tmp_path_factory.mktemp("export") / "model")


def test_export_writes_weights_config_tokenizer_and_card(exported, trained_run):
    from safetensors.torch import load_file

    checkpoint = torch.load(trained_run / "checkpoints/last.ckpt", weights_only=True)
    weights = load_file(str(exported / "model.safetensors"))
    assert set(weights) == set(checkpoint["state_dict"])
    # The state Lightning's EMA callback wrote: the averaged weights, E and the restricted vocabulary.
    for key, value in checkpoint["state_dict"].items():
        assert torch.equal(weights[key], value), key
    assert weights["vocabulary"].numel() < weights["embedding_matrix"].shape[0]
    config = json.loads((exported / "config.json").read_text())
    assert config["hyper_parameters"]["target_length"] == 8
    assert config["hyper_parameters"]["denoiser"]["width"] == 32
    assert config["training"]["global_step"] == 2
    assert config["casing"] is None  # a cased tokenizer: nothing to recase with
    assert (exported / "tokenizer" / "tokenizer.json").is_file()
    card = (exported / "README.md").read_text()
    assert "JsonlDataModule" in card and "8 training pairs" in card and "2 optimizer steps" in card
    assert "| val/loss |" in card


def test_from_pretrained_of_folder_and_checkpoint_matches_lightnings_loader(exported, trained_run, reference):
    texts, embeddings = reference
    for path in (exported, trained_run / "checkpoints/last.ckpt"):
        loaded_texts, loaded_embeddings = sampled(SmoothieModule.from_pretrained(path))
        assert loaded_texts == texts
        assert torch.equal(loaded_embeddings, embeddings)


def test_from_pretrained_takes_generation_overrides(exported):
    assert SmoothieModule.from_pretrained(exported, sampling={"steps": 7}).sampler.steps == 7


def test_export_refuses_a_folder_with_files_and_reading_a_non_model(trained_run, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="taken already holds files; pass --overwrite"):
        export_checkpoint(trained_run / "checkpoints/last.ckpt", tmp_path / "taken")
    with pytest.raises(CheckpointError, match="is not an exported smoothie-pl model: it has no config.json"):
        SmoothieModule.from_pretrained(tmp_path / "taken")
    with pytest.raises(CheckpointError, match="does not exist"):
        SmoothieModule.from_pretrained(tmp_path / "missing.ckpt")


LOAD_OFFLINE = """
import sys, torch
from smoothie_pl.module import SmoothieModule
from tests.test_export import sampled
for name, path in (("folder", sys.argv[1]), ("checkpoint", sys.argv[2])):
    texts, embeddings = sampled(SmoothieModule.from_pretrained(path))
    torch.save({"texts": texts, "embeddings": embeddings}, sys.argv[3] + name + ".pt")
"""


@pytest.mark.slow
def test_a_fresh_process_loads_both_with_the_embedding_model_deleted(exported, trained_run, reference, tmp_path):
    embedding, hidden = trained_run / "embedding", trained_run / "embedding-hidden"
    root = Path(__file__).resolve().parents[1]
    embedding.rename(hidden)
    try:
        process = subprocess.run(
            [sys.executable, "-c", LOAD_OFFLINE, str(exported), str(trained_run / "checkpoints/last.ckpt"),
             f"{tmp_path}/"],
            cwd=root,
            env={**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"},
            capture_output=True,
            text=True,
        )
    finally:
        hidden.rename(embedding)
    assert process.returncode == 0, process.stderr[-3000:]
    texts, embeddings = reference
    for name in ("folder", "checkpoint"):
        loaded = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert loaded["texts"] == texts
        assert torch.equal(loaded["embeddings"], embeddings)


def test_smoothie_predict_with_a_checkpoint_runs_with_the_embedding_model_deleted(trained_run, pairs_dir, tmp_path):
    """The config names the embedding model, but the module and the data take ``E`` and the tokenizer from the checkpoint."""
    embedding, hidden = trained_run / "embedding", trained_run / "embedding-hidden"
    smoothie = Path(sys.executable).with_name("smoothie")
    files = [f"--data.init_args.{split}_file={pairs_dir / f'{split}.jsonl'}" for split in ("train", "validation", "test")]
    embedding.rename(hidden)
    try:
        process = subprocess.run(
            [str(smoothie), "predict", f"--model.embedding={embedding}", "--model.target_length=8",
             "--model.source_length=10", "--data=smoothie_pl.data.JsonlDataModule", *files,
             "--data.init_args.predict_split=test", f"--ckpt_path={trained_run / 'checkpoints/last.ckpt'}",
             f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=false"],
            capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
    finally:
        hidden.rename(embedding)
    assert process.returncode == 0, process.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    test_pairs = (pairs_dir / "test.jsonl").read_text().splitlines()
    assert [record["reference"] for record in records] == [json.loads(line)["trg"] for line in test_pairs]


def test_a_pretrained_source_encoder_is_rebuilt_from_its_saved_config(tmp_path):
    """Saved outside a Trainer, the checkpoint still holds the tokenizer and the encoder's config."""
    import shutil

    from smoothie_pl.export import add_loading_parts

    from .conftest import make_word_model, pair_words

    embedding = make_word_model(tmp_path / "embedding", pair_words())
    denoiser = {"width": 32, "depth": 2, "heads": 2, "encoder_depth": 1, "source_encoder": "pretrained"}
    module = SmoothieModule(embedding=str(embedding), denoiser=denoiser, target_length=8, source_length=10).eval()
    expected = sampled(module)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    add_loading_parts(checkpoint, module)
    torch.save(checkpoint, tmp_path / "model.ckpt")
    shutil.rmtree(embedding)
    loaded = SmoothieModule.from_pretrained(tmp_path / "model.ckpt")
    texts, embeddings = sampled(loaded)
    assert texts == expected[0] and torch.equal(embeddings, expected[1])


def test_an_uncased_models_casing_is_learned_at_fit_and_travels_with_it(tmp_path, monkeypatch):
    """The training targets' casing, learned when ``fit`` starts, is what a checkpoint and an export recase with."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from smoothie_pl.data import JsonlDataModule
    from smoothie_pl.pipeline import SmoothiePipeline

    from .conftest import make_word_model

    targets = ["then I saw Yahweh", "so Moses said to Yahweh", "and I went up", "Moses went to God"]
    # Counted away from each text's first word: I twice, Yahweh twice, Moses once, God once.
    expected = {"i": "I", "yahweh": "Yahweh", "moses": "Moses", "god": "God"}
    words = sorted({word.lower() for target in targets for word in target.split()})
    embedding = str(make_word_model(tmp_path / "embedding", words, lowercase=True))
    for split in ("train", "validation", "test"):
        lines = [json.dumps({"src": target.lower(), "trg": target}) for target in targets]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    files = {f"{split}_file": str(tmp_path / f"{split}.jsonl") for split in ("train", "validation", "test")}
    data = JsonlDataModule(tokenizer=embedding, target_length=8, source_length=10, batch_size=4, **files)
    denoiser = {"width": 32, "depth": 2, "heads": 2, "encoder_depth": 1}
    module = SmoothieModule(
        embedding=embedding, denoiser=denoiser, target_length=8, source_length=10, sampling={"steps": 2, "recase": True}
    )
    assert module.casing is None  # nothing learned before fit
    trainer = L.Trainer(
        accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)],
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert module.casing == expected
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    folder = export_checkpoint(checkpoint, tmp_path / "export")
    assert json.loads((folder / "config.json").read_text())["casing"] == expected
    loaded = [SmoothieModule.load_from_checkpoint(checkpoint)]
    loaded += [SmoothieModule.from_pretrained(path) for path in (checkpoint, folder)]
    monkeypatch.setattr(SmoothiePipeline, "decode", lambda self, embeddings: ["so i saw yahweh"] * embeddings.shape[0])
    for model in loaded:
        assert model.casing == expected
        assert model.generate(["so i saw yahweh"]) == ["So I saw Yahweh"]
