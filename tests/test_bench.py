"""The benchmark scripts run end to end at tiny sizes, and their memory readings see what they should."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench"
SRC = Path(__file__).resolve().parents[1] / "src"


def run_tiny(script: str, out: Path, *options: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(BENCH / script), "--tiny", "--out", str(out), *options], check=True, env=env,
                   capture_output=True, text=True)
    name = Path(script).stem
    assert (out / f"{name}_tiny.md").read_text().count("\n") >= 3  # header, rule and at least one row
    return json.loads((out / f"{name}_tiny.json").read_text())


def assert_measured(records: list[dict]) -> None:
    assert records
    for record in records:
        assert "error" not in record, record
        assert record["seconds"] > 0 and record["extra_bytes"] >= 0


@pytest.mark.slow
def test_vocab_op_bench_sees_the_literal_formulas_vocabulary_tensor(tmp_path):
    result = run_tiny("vocab_op.py", tmp_path)
    assert result["machine"]["load_average"]
    assert_measured(result["records"])
    for record in result["records"]:
        one_tensor = record["positions"] * record["vocab"] * 4
        if record["impl"] == "literal":
            assert record["extra_bytes"] >= one_tensor  # the measurement sees a materialised [N, V] fp32 tensor
        else:
            assert record["extra_bytes"] < one_tensor / 2


@pytest.mark.slow
def test_train_step_bench_reports_tokens_flops_and_loss_curves(tmp_path):
    result = run_tiny("train_step.py", tmp_path)
    assert_measured(result["records"])
    for record in result["records"]:
        assert 0 < record["flops_per_s"] < 2 * record["peak_flops_per_s"]
    assert [len(curve["losses"]) for curve in result["curves"]] == [2, 2, 2]


@pytest.mark.slow
def test_sampling_bench_compares_both_formulations(tmp_path):
    result = run_tiny("sampling.py", tmp_path)
    assert_measured(result["records"])
    assert [r["impl"] for r in result["records"]] == ["streaming", "literal", "streaming"]
    assert [r.get("hardware_aware", False) for r in result["records"]] == [False, False, True]
    assert result["training"]["tokens_per_s"] > 0 and all(r["token_steps_per_s"] > 0 for r in result["records"])


@pytest.mark.slow
def test_scaling_bench_draws_its_plot(tmp_path):
    result = run_tiny("scaling.py", tmp_path)
    for records in result["results"].values():
        assert_measured(records)
    assert (tmp_path / "scaling_tiny.png").stat().st_size > 1000


@pytest.mark.slow
def test_demo_recipe_bench_times_the_windows_and_both_cross_entropy_paths(tmp_path):
    pytest.importorskip("pythonbible", reason="the demo's Bible pairs come from pythonbible (the demo extra)")
    result = run_tiny("demo_recipe.py", tmp_path, "--data-dir", str(tmp_path / "bible"))
    shipped, windowed = result["steps"]
    assert "error" not in shipped and "error" not in windowed
    assert shipped["mean_width"] == 64 and windowed["mean_width"] < 64  # most verses are far shorter than 64 tokens
    assert [record["path"] for record in result["cross_entropy"]] == ["checkpointed", "one pass"]
    assert all(record["seconds"] > 0 for record in result["cross_entropy"])
