"""`smoothie generate`: sources in, one generation per line out, steps on request; bad input named by line."""

import io
import json

import pytest
import torch

from smoothie_pl.cli import run
from smoothie_pl.diffusion import build_sampler
from smoothie_pl.module import SmoothieModule
from smoothie_pl.precision import fast_bf16

from .conftest import PAIRS

SOURCES = [source for source, _ in PAIRS]


def bf16_autocast(enabled: bool = True):
    """What `--precision bf16-mixed` means, written with torch's own autocast (fp32 where bf16 would be emulated)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled and fast_bf16("cpu"))


@pytest.fixture(scope="module")
def checkpoint(trained_run):
    return str(trained_run / "checkpoints/last.ckpt")


@pytest.fixture(scope="module")
def model(checkpoint):
    return SmoothieModule.from_pretrained(checkpoint)


def test_text_and_jsonl_outputs_match_generate_for_any_batch_size(checkpoint, model, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(SOURCES) + "\n")
    with bf16_autocast():  # --precision auto: bf16 where this CPU has bf16 units
        expected = model.generate(SOURCES, steps=4, seed=5)
    assert run(["generate", "--model", checkpoint, "--input", str(tmp_path / "in.txt"), "--output",
                str(tmp_path / "out.txt"), "--steps", "4", "--seed", "5", "--batch_size", "3"]) == 0
    assert (tmp_path / "out.txt").read_text().split("\n")[:-1] == expected
    jsonl = "".join(json.dumps({"src": source, "id": i}) + "\n" for i, source in enumerate(SOURCES))
    (tmp_path / "in.jsonl").write_text(jsonl)
    assert run(["generate", "--model", checkpoint, "--input", str(tmp_path / "in.jsonl"), "--output",
                str(tmp_path / "out.jsonl"), "--steps", "4", "--seed", "5", "--device", "cpu"]) == 0
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert records == [{"index": i, "source": s, "prediction": p} for i, (s, p) in enumerate(zip(SOURCES, expected))]


@pytest.mark.parametrize("precision, autocast", [("32-true", False), ("bf16-mixed", True)])
def test_precision_is_the_autocast_it_names(checkpoint, model, tmp_path, capsys, precision, autocast):
    (tmp_path / "in.txt").write_text("\n".join(SOURCES) + "\n")
    with bf16_autocast(autocast):
        expected = model.generate(SOURCES, steps=3, seed=1)
    assert run(["generate", "--model", checkpoint, "--input", str(tmp_path / "in.txt"), "--output",
                str(tmp_path / "out.txt"), "--steps", "3", "--seed", "1", "--precision", precision]) == 0
    assert (tmp_path / "out.txt").read_text().split("\n")[:-1] == expected
    assert f"precision {precision} on cpu" in capsys.readouterr().err


def test_stdin_to_stdout_and_the_steps_drawn(checkpoint, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("And God said, Let there be light\n"))
    arguments = ["--model", checkpoint, "--input", "-", "--output", "-", "--show-steps", "--steps", "3"]
    assert run(["generate", *arguments]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert "source 0: And God said, Let there be light" in captured.err
    for k, t in enumerate((1.0, 2 / 3, 1 / 3)):  # the grid t_k = 1 - k / N
        assert f"{k} │ {t:.3f}" in captured.err


def test_trajectory_file_holds_every_step_and_ends_at_the_output(checkpoint, model, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(SOURCES[:3]) + "\n")
    assert run(["generate", "--model", checkpoint, "--input", str(tmp_path / "in.txt"), "--output",
                str(tmp_path / "out.txt"), "--steps", "4", "--candidates", "2",
                "--trajectory", str(tmp_path / "steps.jsonl")]) == 0
    outputs = (tmp_path / "out.txt").read_text().split("\n")[:-1]
    records = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert [record["source"] for record in records] == SOURCES[:3]
    for record, output in zip(records, outputs):
        assert [step["step"] for step in record["steps"]] == [0, 1, 2, 3]
        assert [step["t"] for step in record["steps"]] == pytest.approx([1.0, 0.75, 0.5, 0.25])
        assert record["prediction"] == output == record["steps"][-1]["text"]
    with bf16_autocast():
        texts, trajectories = model.generate(SOURCES[:3], steps=4, candidates=2, trajectory=True)
    assert texts == outputs and trajectories == records


@pytest.mark.parametrize(
    "content, message",
    [
        ("a source\n\nanother\n", "in.txt:2: empty line (give one source per line)"),
        ('{"src": "a"}\n{"src": "b"\n', "in.txt:2: malformed JSON"),
        ('{"src": "a"}\n{"text": "b"}\n', "in.txt:2: missing field 'src'"),
        ('{"src": ""}\n', "in.txt:1: field 'src' must be a non-empty string"),
    ],
)
def test_a_bad_input_line_is_one_error_naming_it(checkpoint, tmp_path, capsys, content, message):
    (tmp_path / "in.txt").write_text(content)
    status = run(["generate", "--model", checkpoint, "--input", str(tmp_path / "in.txt"), "--output", "-"])
    error = capsys.readouterr().err
    assert status == 1 and message in error and error.count("\n") == 1 and "Traceback" not in error


def test_an_existing_output_and_a_missing_model_are_refused(checkpoint, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("a source\n")
    (tmp_path / "out.txt").write_text("kept\n")
    assert run(["generate", "--model", checkpoint, "--input", str(tmp_path / "in.txt"), "--output",
                str(tmp_path / "out.txt")]) == 1
    assert "out.txt already exists; pass --overwrite" in capsys.readouterr().err
    assert (tmp_path / "out.txt").read_text() == "kept\n"
    assert run(["generate", "--model", str(tmp_path / "none.ckpt"), "--input", str(tmp_path / "in.txt"),
                "--output", "-"]) == 1
    assert "none.ckpt does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["renoise", "ddim"])
def test_the_sampler_callback_sees_every_evaluation(model, name):
    """k and t on the grid, x the model input, e0 the prediction; the last e0 is what the sampler returns."""
    seen, calls = [], []
    sampler = build_sampler(name, steps=4)

    def callback(k, t, x, e0):
        seen.append((k, t.clone(), x.clone(), e0.clone()))

    if name == "renoise":
        denoise = lambda x, t: torch.tanh(x) + t.view(-1, 1, 1)  # noqa: E731
    else:
        row = model.space.embeddings[:1]
        denoise = lambda x, t: row.expand(x.shape[0], x.shape[1], -1) * t.view(-1, 1, 1)  # noqa: E731

    def recorded(x, t):
        calls.append((x.clone(), t.clone()))
        return denoise(x, t)

    out = sampler.sample(model.space, recorded, 2, 3, torch.Generator().manual_seed(0), callback=callback)
    assert [k for k, *_ in seen] == [0, 1, 2, 3]
    for (k, t, x, e0), (called_x, called_t) in zip(seen, calls):
        assert torch.equal(t, torch.full((2,), 1 - k / 4))
        assert torch.equal(x, called_x) and torch.equal(t, called_t)
        assert torch.equal(e0, denoise(x, t))
    assert torch.equal(out, seen[-1][3])
