"""Every user mistake ends in one line naming it (CLI) or an exception naming the argument (Python API)."""

import json
import os
import subprocess

import pytest

from smoothie_pl.cli import run
from smoothie_pl.data import JsonlDataModule
from smoothie_pl.data.jsonl import read_jsonl_pairs
from smoothie_pl.errors import DataError

from .conftest import PAIRS
from .test_cli import ROOT, SMOOTHIE, TINY
from .test_module import tiny_module


def error_lines(capsys) -> list[str]:
    """stderr lines, without the warnings Python or Lightning print on the way."""
    return [line for line in capsys.readouterr().err.splitlines() if "Warning" not in line and "args parameter" not in line]


@pytest.mark.parametrize(
    "arguments, line",
    [
        (["--model.denoiser.widht", "32"], "  model.denoiser.widht: not an option of model.denoiser (did you mean 'width'?)"),
        (
            ["--model.sampling.guidance_weight", "2"],
            "  model.sampling.guidance_weight = 2.0: allowed 0 unless model.cfg_dropout > 0",
        ),
        (["--model.token_head", "tied"], "  model.token_head = 'tied': allowed None unless model.space is 'simplex'"),
        (["--model.train_embeddings", "true", "--model.space", "gaussian"],
         "  model.train_embeddings = True: allowed False unless model.space is 'smoothie'"),
        (["--model.cfg_dropout", "0.1", "--model.denoiser.source_encoder", "none"],
         "  model.cfg_dropout = 0.1: allowed in [0, 1), and 0 when model.denoiser.source_encoder is 'none'"),
        (["--data.init_args.global_batch_size", "8", "--trainer.accumulate_grad_batches", "2"],
         "  data.init_args.global_batch_size = 8: allowed >= 1, with trainer.accumulate_grad_batches left at 1"),
        (["--prediction_writer.if_exists", "append"],
         "  prediction_writer.if_exists = 'append': allowed one of ['error', 'overwrite', 'resume']"),
        (["--model.embedding", "/no/such/model"],
         "  model.embedding = '/no/such/model': allowed an existing local model folder or a Hugging Face model name"),
    ],
    ids=["misspelt-nested-key", "guidance-without-cfg", "token-head-on-smoothie", "trained-E-off-smoothie",
         "cfg-unconditional", "global-batch-and-accumulation", "if-exists-choice", "missing-embedding-path"],
)
def test_impossible_or_conflicting_options_are_one_line_each(arguments, line, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(["fit", "--config", str(TINY), *arguments]) == 1
    lines = error_lines(capsys)
    assert lines[-2] == "smoothie: error: impossible configuration values:"
    assert lines[-1].startswith(line), lines[-1]


def test_an_abbreviated_key_is_refused_with_the_real_one_suggested(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert run(["fit", "--config", str(TINY), "--model.sampling_step", "3"]) == 2
    assert error_lines(capsys) == [
        "smoothie: error: unrecognized arguments: --model.sampling_step 3; "
        "--model.sampling_step (did you mean '--model.sampling.steps'?)",
        "hint: run `smoothie fit --help` for the accepted options",
    ]


def test_a_usage_error_is_one_line_and_a_hint(capsys):
    assert run(["fitt"]) == 2
    assert error_lines(capsys) == [
        "smoothie: error: argument subcommand: invalid choice: 'fitt' (choose from 'fit', 'validate', 'test', 'predict')",
        "hint: run `smoothie --help` for the accepted options",
    ]


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  lr: 1e-3\n  denoiser: {width: 32\n")
    assert run(["fit", "--config", str(broken)]) == 2
    (line,) = error_lines(capsys)
    assert line.startswith(f"smoothie: error: {broken}:4:1: invalid yaml: expected ',' or '}}'"), line


def test_an_unexpected_error_is_one_line_unless_debug_asks_for_the_traceback(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)

    def broken(*args, **kwargs):
        raise RuntimeError("the\nbug")

    monkeypatch.setattr("smoothie_pl.cli.config_errors", broken)
    assert run(["fit", "--config", str(TINY)]) == 1
    assert error_lines(capsys)[-1] == (
        "smoothie: error: unexpected RuntimeError: the bug (run again with --debug for the traceback)"
    )
    assert run(["fit", "--config", str(TINY), "--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv("SMOOTHIE_DEBUG", "1")
    assert run(["fit", "--config", str(TINY)]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


# ------------------------------------------------------------------ data files
def test_a_directory_given_as_data_file_is_named_as_one(tmp_path):
    with pytest.raises(DataError, match=f"data file {tmp_path} is a directory; give the path of a .jsonl file"):
        read_jsonl_pairs(tmp_path)


def test_a_duplicate_json_key_is_an_error_naming_file_line_and_key(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"src": "a", "trg": "b"}\n{"src": "a", "trg": "b", "trg": "c"}\n')
    with pytest.raises(DataError, match=f"^{path}:2: field 'trg' is given twice in one object$"):
        read_jsonl_pairs(path)


def test_texts_that_are_mostly_unknown_tokens_are_warned(tmp_path, word_model):
    path = tmp_path / "train.jsonl"
    records = [{"src": "zebra quagga okapi the", "trg": "the cat"}, *({"src": s, "trg": t} for s, t in PAIRS[:3])]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    data = JsonlDataModule(train_file=str(path), tokenizer=word_model, target_length=8, source_length=10)
    with pytest.warns(UserWarning, match=r"train split: 1 of 4 sources and 0 targets are mostly \[UNK\]"):
        data.dataset("train")


# ------------------------------------------------------------------ generate
@pytest.fixture(scope="module")
def module(word_model):
    return tiny_module(word_model, sampling={"steps": 2})


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ({"sources": ["a", 3]}, TypeError, "generate: sources\\[1\\] is int 3, not a string"),
        ({"sources": "the cat"}, TypeError, "generate expects a list of source strings, got str"),
        ({"candidates": 0}, ValueError, "generate: candidates must be a positive integer .* got 0"),
        ({"batch_size": 0}, ValueError, "generate: batch_size must be a positive integer .* got 0"),
        ({"steps": 2.5}, ValueError, "generate: steps must be a positive integer .* got 2.5"),
        ({"seed": -1}, ValueError, "generate: seed must be a non-negative integer, got -1"),
    ],
    ids=["non-string", "one-string", "zero-candidates", "zero-batch", "fractional-steps", "negative-seed"],
)
def test_generate_names_the_argument_that_cannot_work(module, arguments, error, message):
    arguments = {"sources": ["the cat"], **arguments}
    with pytest.raises(error, match=message):
        module.generate(**arguments)


def test_generate_warns_when_a_source_is_cut_to_source_length(module):
    long = " ".join(["the cat sat on the mat"] * 3)  # 18 words + [CLS] and [SEP] > source_length 10
    with pytest.warns(UserWarning, match=r"generate: 1 of 2 sources are longer than source_length=10 tokens .*"
                                         r"\(sources 1; the longest has 20 tokens\)"):
        module.generate(["the cat", long], steps=1)


def test_a_misspelt_denoiser_option_names_the_closest_real_one(word_model):
    with pytest.raises(TypeError, match=r"denoiser has no option 'widht' \(did you mean 'width'\?\)"):
        tiny_module(word_model, denoiser={"widht": 32})


@pytest.mark.slow
def test_the_console_script_hides_tracebacks_of_usage_errors(tmp_path):
    done = subprocess.run(
        [str(SMOOTHIE), "fit", "--config", str(TINY), "--trainer.max_step", "3"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-2:] == [
        "smoothie: error: unrecognized arguments: --trainer.max_step 3; "
        "--trainer.max_step (did you mean '--trainer.max_steps'?)",
        "hint: run `smoothie fit --help` for the accepted options",
    ]
