"""End to end through the `smoothie` console script, and every shipped yaml instantiates."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smoothie_pl.cli import build_cli
from smoothie_pl.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
SMOOTHIE = Path(sys.executable).with_name("smoothie")


def smoothie(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SMOOTHIE), *args, "--config", str(TINY), "--trainer.default_root_dir", "run"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.slow
def test_fit_test_predict_end_to_end(tmp_path):
    fit = smoothie("fit", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = tmp_path / "run/checkpoints/last.ckpt"
    assert checkpoint.is_file()

    test = smoothie("test", "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    for metric in ("sacrebleu", "bleu", "rougeL", "div4", "copy_source_sacrebleu"):  # the "demo" set
        assert f"test/{metric}" in test.stdout

    predict = smoothie(
        "predict", "--ckpt_path", str(checkpoint),
        "--model.sampling.mbr_candidates", "2", "--model.evaluation.predict_candidates", "true",
        cwd=tmp_path,
    )
    assert predict.returncode == 0, predict.stderr[-3000:]
    lines = (tmp_path / "run/predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # tiny.yaml predicts one batch of 4 from the Bible test split.
    assert [record["index"] for record in records] == [0, 1, 2, 3]
    assert all(set(record) == {"index", "source", "reference", "prediction", "candidates"} for record in records)
    assert all(len(record["candidates"]) == 2 and record["prediction"] in record["candidates"] for record in records)
    test_split = [json.loads(line) for line in (tmp_path / "data/bible/test.jsonl").read_text().splitlines()]
    assert [record["reference"] for record in records] == [pair["trg"] for pair in test_split[:4]]


def test_unknown_config_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="unrecognized arguments: --model.not_a_key 1$"):
        build_cli(["--config", str(TINY), "--model.not_a_key", "1"], run=False)
