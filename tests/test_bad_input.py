"""Bad data, configs, checkpoints and diverging runs end in an error that names the file, line, key or step."""

import json
import os
import runpy
import subprocess
from dataclasses import replace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from smoothie_pl.callbacks import NonFiniteGuard
from smoothie_pl.cli import build_cli, run
from smoothie_pl.data import BibleDataModule, JsonlDataModule
from smoothie_pl.data.jsonl import read_jsonl_pairs
from smoothie_pl.errors import (
    CheckpointMismatchError,
    ConfigError,
    DataError,
    DataFileNotFoundError,
    NonFiniteLossError,
)
from smoothie_pl.fingerprint import CHECKPOINT_KEY, tensor_digest
from smoothie_pl.module import SmoothieModule

from .conftest import SPECIAL_TOKENS, make_word_model, pair_words
from .test_cli import ROOT, SMOOTHIE, TINY
from .test_module import TINY as TINY_DENOISER
from .test_module import tiny_module

GOOD = '{"src": "a", "trg": "b"}'


def write_bytes(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


# ------------------------------------------------------------------ data files
@pytest.mark.parametrize(
    "line, message",
    [
        (b"{not json", "malformed JSON"),
        (b'{"src": "a"}', "missing field 'trg'"),
        (b'{"src": "a", "trg": "  "}', "field 'trg' must be a non-empty string"),
        (b'{"src": ["a"], "trg": "b"}', "field 'src' must be a non-empty string"),
        (b'{"src": "caf\xe9", "trg": "b"}', "invalid UTF-8 at byte 12"),
        (b"3", "expected a JSON object, got int"),
    ],
)
def test_bad_line_is_named_by_file_line_and_field(tmp_path, line, message):
    path = write_bytes(tmp_path / "bad.jsonl", [GOOD.encode(), b"", line, GOOD.encode()])
    with pytest.raises(DataError, match=message) as error:
        read_jsonl_pairs(path)
    assert str(error.value).startswith(f"{path}:3: ")


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(DataFileNotFoundError, match="nope.jsonl does not exist"):
        read_jsonl_pairs(tmp_path / "nope.jsonl")
    empty = write_bytes(tmp_path / "empty.jsonl", [b"", b"  "])
    with pytest.raises(DataError, match=f"{empty} holds no 'src'/'trg' pairs: it is empty"):
        read_jsonl_pairs(empty)


def test_skipping_bad_lines_keeps_the_good_ones_and_reports_the_first_five(tmp_path):
    lines = [GOOD.encode()] + [b"{broken"] * 7 + [b'{"src": "c", "trg": "d"}']
    path = write_bytes(tmp_path / "mixed.jsonl", lines)
    with pytest.warns(UserWarning) as warnings:
        pairs = read_jsonl_pairs(path, skip_bad_lines=True)
    assert [(pair.source, pair.target) for pair in pairs] == [("a", "b"), ("c", "d")]
    (warning,) = warnings
    assert f"{path}: skipped 7 bad line(s) (lines 2, 3, 4, 5, 6, ...; line 2: malformed JSON" in str(warning.message)


def test_a_file_of_only_bad_lines_is_an_error_even_when_skipping(tmp_path):
    path = write_bytes(tmp_path / "bad.jsonl", [b"[1]", b"{"])
    with pytest.warns(UserWarning), pytest.raises(DataError, match="all 2 non-blank lines are bad"):
        read_jsonl_pairs(path, skip_bad_lines=True)


def test_overlong_texts_are_truncated_and_counted_in_one_warning(tmp_path, word_model):
    long_source = "the cat sat on the mat " * 3  # 18 words, + CLS and SEP
    records = [{"src": long_source, "trg": "a cat was sitting on a mat"}, {"src": "love thy neighbour", "trg": "love"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    data = JsonlDataModule(train_file=str(path), tokenizer=word_model, target_length=4, source_length=5)
    with pytest.warns(UserWarning) as warnings:
        dataset = data.dataset("train")
    messages = [str(warning.message) for warning in warnings]
    assert messages == [
        "train split: truncated 1 of 2 sources to source_length=5 tokens and 1 targets to target_length=4"
    ]
    tokens = data.tokenizer.convert_ids_to_tokens
    assert tokens(dataset.source_ids[0]) == ["[CLS]", "the", "cat", "sat", "[SEP]"]  # the end token is kept
    assert tokens(dataset.target_ids[0]) == ["a", "cat", "was", "sitting"]
    assert tokens(dataset.source_ids[1]) == ["[CLS]", "love", "thy", "neighbour", "[SEP]"]


# ------------------------------------------------------------------ checkpoints
def saved_checkpoint(module) -> dict:
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    return checkpoint


def test_checkpoint_records_what_the_weights_depend_on(word_model):
    module = tiny_module(word_model, vocabulary=[0, 3, 6, 7])
    recorded = saved_checkpoint(module)[CHECKPOINT_KEY]
    tokenizer = module.tokenizer
    assert recorded["embedding"] == word_model
    assert recorded["embedding_shape"] == [len(SPECIAL_TOKENS) + len(pair_words()), 16]
    assert recorded["tokenizer_size"] == len(tokenizer)
    assert recorded["vocabulary_size"] == 4
    assert recorded["space"] == "SmoothieSpace"
    assert recorded["schedule"] == {"name": "arctan", "sigma_min": 1.5, "sigma_max": 200.0, "k": 9.0, "delta": 1.0}
    assert (recorded["target_length"], recorded["source_length"]) == (8, 10)
    # Digests: equal for an equal matrix, different for a matrix one value apart.
    matrix = module.embedding_matrix.clone()
    assert tensor_digest(matrix) == recorded["embedding_sha256"] == recorded["pretrained_embedding_sha256"]
    assert recorded["embedding_trained"] is False
    matrix[3, 2] += 1e-3
    assert tensor_digest(matrix) != recorded["embedding_sha256"]


def test_checkpoint_of_another_embedding_matrix_is_refused_naming_both(word_model, tmp_path):
    checkpoint = saved_checkpoint(tiny_module(word_model))
    reseeded = str(make_word_model(tmp_path / "reseeded", pair_words(), seed=1))  # same tokenizer, other weights
    with pytest.raises(CheckpointMismatchError) as error:
        tiny_module(reseeded).on_load_checkpoint(checkpoint)
    message = str(error.value)
    assert "embedding matrix: the checkpoint has embedding=" + repr(word_model) in message
    assert "this run has embedding=" + repr(reseeded) in message
    assert "tokenizer:" not in message  # the token table is the same


def test_embedding_matrix_rounding_noise_from_other_hardware_is_tolerated(word_model):
    checkpoint = saved_checkpoint(tiny_module(word_model))
    noisy = checkpoint["state_dict"]["embedding_matrix"] * (1 + 1e-7)
    checkpoint["state_dict"]["embedding_matrix"] = noisy
    recorded = checkpoint[CHECKPOINT_KEY]
    recorded["embedding_sha256"] = recorded["pretrained_embedding_sha256"] = tensor_digest(noisy)
    assert tensor_digest(noisy) != tiny_module(word_model).fingerprint()["pretrained_embedding_sha256"]
    tiny_module(word_model).on_load_checkpoint(checkpoint)  # the digests differ, the values agree
    checkpoint["state_dict"]["embedding_matrix"] = noisy * 1.01
    with pytest.raises(CheckpointMismatchError, match="embedding matrix"):
        tiny_module(word_model).on_load_checkpoint(checkpoint)


def test_checkpoint_of_another_tokenizer_is_refused_naming_both(word_model, tmp_path):
    checkpoint = saved_checkpoint(tiny_module(word_model))
    other = str(make_word_model(tmp_path / "other", [*pair_words(), "zebra"]))
    with pytest.raises(CheckpointMismatchError) as error:
        tiny_module(other).on_load_checkpoint(checkpoint)
    message = str(error.value)
    size = len(SPECIAL_TOKENS) + len(pair_words())
    assert f"tokenizer: the checkpoint has embedding={word_model!r}, tokenizer_size={size}" in message
    assert f"this run has embedding={other!r}, tokenizer_size={size + 1}" in message


def test_checkpoint_with_other_lengths_or_schedule_is_refused(word_model):
    checkpoint = saved_checkpoint(tiny_module(word_model))
    with pytest.raises(CheckpointMismatchError, match="lengths: the checkpoint has target_length=8, source_length=10"):
        tiny_module(word_model, target_length=12).on_load_checkpoint(checkpoint)
    with pytest.raises(CheckpointMismatchError, match="schedule: .*'sigma_max': 200.0.*'sigma_max': 100.0"):
        tiny_module(word_model, schedule={"sigma_max": 100.0}).on_load_checkpoint(checkpoint)


def test_data_vocabulary_other_than_the_checkpoints_is_refused_but_no_vocabulary_takes_it(word_model):
    checkpoint = saved_checkpoint(tiny_module(word_model, vocabulary=[0, 3, 6, 7]))
    with pytest.raises(CheckpointMismatchError) as error:
        tiny_module(word_model, vocabulary=[0, 3, 6, 8, 9]).on_load_checkpoint(checkpoint)
    tokens = tiny_module(word_model).tokenizer.convert_ids_to_tokens([7, 8, 9])
    message = str(error.value)
    assert "diffuses over 4 token ids" in message and "gives a vocabulary of 5" in message
    assert f"1 only in the checkpoint ('{tokens[0]}'), 2 only in the data ('{tokens[1]}', '{tokens[2]}')" in message
    unrestricted = tiny_module(word_model)
    unrestricted.on_load_checkpoint(checkpoint)
    assert unrestricted.vocabulary.tolist() == [0, 3, 6, 7]


def test_checkpoint_of_another_architecture_is_refused_naming_weights_and_options(word_model):
    # What a resume meets after the config changed between runs: not torch's strict-load traceback.
    module = tiny_module(word_model)
    checkpoint = {**saved_checkpoint(module), "hyper_parameters": dict(module.hparams)}
    with pytest.raises(CheckpointMismatchError) as error:
        tiny_module(word_model, denoiser=replace(TINY_DENOISER, self_conditioning=True)).on_load_checkpoint(checkpoint)
    message = str(error.value)
    assert "weights this model has and the checkpoint lacks: denoiser.self_conditioning.encoder.input.weight" in message
    assert "model.denoiser.self_conditioning: checkpoint False, this run True" in message
    assert "weights the checkpoint has and this model lacks" not in message

    with pytest.raises(CheckpointMismatchError) as error:
        tiny_module(word_model, denoiser=replace(TINY_DENOISER, width=96)).on_load_checkpoint(checkpoint)
    message = str(error.value)
    assert "weights of another shape (checkpoint vs this model): denoiser.input.weight (64, 16) vs (96, 16)" in message
    assert "model.denoiser.width: checkpoint 64, this run 96" in message
    assert "model.denoiser.depth" not in message  # only what differs


def test_load_from_checkpoint_file_round_trips_and_checks(word_model, tmp_path):
    module = tiny_module(word_model)
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = SmoothieModule.load_from_checkpoint(path)
    assert loaded.fingerprint() == module.fingerprint()
    with pytest.raises(CheckpointMismatchError, match="lengths"):
        SmoothieModule.load_from_checkpoint(path, target_length=9)


# ------------------------------------------------------------------ configs
def test_impossible_config_values_fail_at_start_up_naming_key_and_range(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    def built(*args, **kwargs):
        raise AssertionError("data was read or a model was built before the config was checked")

    monkeypatch.setattr(BibleDataModule, "prepare_data", built)
    monkeypatch.setattr(JsonlDataModule, "read_split", built)
    monkeypatch.setattr("smoothie_pl.module.load_embedding_matrix", built)
    bad = {
        "--model.sampling.steps": ("-3", "model.sampling.steps = -3: allowed >= 1"),
        "--model.schedule.sigma_max": (
            "1.0",
            "model.schedule = {'sigma_max': '1.0'}: ArctanSchedule needs 0 < sigma_min < sigma_max, "
            "got sigma_min=1.5, sigma_max=1.0",
        ),
        "--model.target_length": ("0", "model.target_length = 0: allowed >= 1"),
        "--model.vocab_chunk_size": ("0", "model.vocab_chunk_size = 0: allowed >= 1"),
        "--model.denoiser.heads": ("3", "model.denoiser.heads = 3: allowed a divisor of model.denoiser.width"),
        "--data.init_args.batch_size": ("-1", "data.init_args.batch_size = -1: allowed >= 1"),
        "--trainer.max_steps": ("-5", "trainer.max_steps = -5: allowed >= -1"),
        "--ema.decay": ("1.5", "ema.decay = 1.5: allowed in (0, 1)"),
    }
    arguments = [item for option, (value, _) in bad.items() for item in (option, value)]
    with pytest.raises(ConfigError) as error:
        build_cli(["--config", str(TINY), *arguments], run=False)
    lines = str(error.value).splitlines()[1:]
    assert sorted(line.strip() for line in lines) == sorted(message for _, message in bad.values())


@pytest.mark.parametrize(
    "schedule, message",
    [
        ("{name: sd, k: -1}", "SdSchedule needs k > 0, got k=-1.0"),
        ("{name: cosine, beta_0: 2, beta_1: 1}", "CosineSchedule needs 0 < beta_0 <= beta_1, got 2.0, 1.0"),
        ("{name: sd, sigma_min: 2}", "unexpected keyword argument 'sigma_min'"),
        ("{name: tan}", "unknown schedule 'tan'; choose one of ['arctan', 'cosine', 'sd', 'sqrt', 'tess']"),
        ("{name: sd, k: nine}", "schedule.k: expected a number, got 'nine'"),
    ],
)
def test_every_schedule_is_checked_at_start_up_by_its_own_ranges(schedule, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        build_cli(["--config", str(TINY), "--model.schedule", schedule], run=False)
    (line,) = str(error.value).splitlines()[1:]
    assert line.strip().startswith("model.schedule = {") and message in line


def test_cli_prints_one_error_line_and_exits_nonzero(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(["fit", "--config", str(TINY), "--model.schedule.sigma_min", "0"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "smoothie: error: impossible configuration values:",
        "  model.schedule = {'sigma_min': '0'}: ArctanSchedule needs 0 < sigma_min < sigma_max, "
        "got sigma_min=0.0, sigma_max=200.0",
    ]
    assert run(["fit", "--config", str(TINY), "--model.no_such_key", "1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert run(["predict", "--config", str(TINY), "--ckpt_path", "missing.ckpt"]) == 1
    assert capsys.readouterr().err.strip() == "smoothie: error: checkpoint missing.ckpt does not exist"
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    assert run(["predict", "--config", str(TINY), "--ckpt_path", "broken.ckpt"]) == 1
    assert capsys.readouterr().err.startswith("smoothie: error: checkpoint broken.ckpt cannot be read")


# ------------------------------------------------------------------ diverging runs
class DivergingModel(BoringModel):
    """Its loss is NaN on the batches ``nan_batches`` of the first epoch."""

    def __init__(self, nan_batches: set[int]) -> None:
        super().__init__()
        self.nan_batches = nan_batches
        self.weights_around_nan = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)["loss"]
        return loss * float("nan") if batch_idx in self.nan_batches and self.current_epoch == 0 else loss

    def on_train_batch_start(self, batch, batch_idx):
        if batch_idx in self.nan_batches:
            self.weights_around_nan.append(self.layer.weight.detach().clone())

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if batch_idx in self.nan_batches:
            self.weights_around_nan.append(self.layer.weight.detach().clone())


def diverging_trainer(tmp_path, guard: NonFiniteGuard) -> L.Trainer:
    return L.Trainer(
        max_steps=8,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[guard, ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)],
    )


def test_nonfinite_loss_stops_training_naming_step_batch_and_last_good_checkpoint(tmp_path):
    trainer = diverging_trainer(tmp_path, NonFiniteGuard())
    with pytest.raises(NonFiniteLossError) as error:
        trainer.fit(DivergingModel(nan_batches={5}))
    message = str(error.value)
    assert message.startswith("non-finite loss (nan) at step 5 (epoch 0, batch index 5)")
    assert f"Last good checkpoint: {tmp_path / 'epoch=0-step=4.ckpt'}." in message
    for path in tmp_path.glob("*.ckpt"):
        state = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(tensor).all() for tensor in state.values()), path


class NaNGradientModel(BoringModel):
    """A finite loss whose gradient is NaN on batch 2: d sqrt(u)/du is infinite at u = 0, times du/dw = 0."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)["loss"]
        if batch_idx == 2:
            loss = loss + torch.sqrt(0 * self.layer.weight.sum())
        return loss


def test_nonfinite_gradient_of_a_finite_loss_also_stops_training(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient \(first in layer.weight\) at step 2 "):
        diverging_trainer(tmp_path, NonFiniteGuard()).fit(NaNGradientModel())


def test_skipping_nonfinite_batches_leaves_the_weights_of_that_step_alone(tmp_path):
    guard = NonFiniteGuard(skip_batches=True)
    model = DivergingModel(nan_batches={3})
    with pytest.warns(UserWarning, match=r"skipped the optimizer step at step 3 \(epoch 0, batch index 3\)"):
        diverging_trainer(tmp_path, guard).fit(model)
    before, after = model.weights_around_nan
    assert torch.equal(before, after)
    assert guard.skipped == 1 and model.global_step == 8
    assert torch.isfinite(model.layer.weight).all()


# ------------------------------------------------------------------ the whole corpus, through the CLI
@pytest.mark.slow
def test_console_script_reports_a_user_error_in_one_line_without_traceback(tmp_path):
    done = subprocess.run(
        [str(SMOOTHIE), "fit", "--config", str(TINY), "--model.sampling.steps", "-1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-2:] == [
        "smoothie: error: impossible configuration values:",
        "  model.sampling.steps = -1: allowed >= 1",
    ]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_robustness_corpus_ends_in_clear_errors_or_correct_results(capsys):
    main = runpy.run_path(str(ROOT / "experiments" / "robustness" / "run.py"))["main"]
    status = main([])
    table = capsys.readouterr().out.splitlines()
    assert status == 0, "\n".join(table)
    rows = table[1:-1]  # between the header and the count
    assert len(rows) >= 25 and all("  ok  " in row for row in rows)
    assert table[-1] == f"{len(rows)} of {len(rows)} cases end as expected"
