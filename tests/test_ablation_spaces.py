"""The space ablation script end to end at a tiny budget: three spaces trained, evaluated, tabled, plotted."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "ablation_spaces" / "run.py"


def load_script():
    spec = importlib.util.spec_from_file_location("ablation_spaces_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_ablation_runs_end_to_end_at_a_tiny_budget(tmp_path):
    run = load_script()
    out = tmp_path / "out"
    # Smoothie kernel widths in the base config, as demo.yaml has them: the other spaces must not get them.
    widths = tmp_path / "widths.yaml"
    widths.write_text("model:\n  schedule:\n    sigma_min: 2.0\n    sigma_max: 250.0\n")
    results = run.main(
        [
            "--config", str(ROOT / "tests" / "configs" / "tiny.yaml"),
            "--config", str(ROOT / "experiments" / "ablation_spaces" / "budget.yaml"),
            "--config", str(widths),
            "--steps", "2",
            "--train-seeds", "0", "1",
            "--eval-size", "3",
            "--sampling-steps", "1", "2",
            "--noise-scales", "1.0",
            "--out", str(out),
            f"--data.init_args.data_dir={tmp_path / 'bible'}",
            "--model.optim.warmup_steps=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert list(results) == ["smoothie", "gaussian", "simplex"]
    for result in results.values():
        runs = result["runs"]
        assert [run["seed"] for run in runs] == [0, 1] and runs[0]["train_loss"] != runs[1]["train_loss"]
        for key in ("1/1", "1/2"):  # the mean and sample standard deviation of two numbers, by hand
            a, b = (run["sacrebleu"][key] for run in runs)
            assert result["sacrebleu"][key] == pytest.approx((a + b) / 2)
            assert result["sacrebleu_sd"][key] == pytest.approx(abs(a - b) / 2**0.5)
    table = (out / "results.md").read_text().splitlines()
    assert "mean ± sd over training seeds 0, 1" in table[0]
    assert table[2] == "| space | noise scale | 1 steps | 2 steps | train loss | train min |"
    assert [line.split(" | ")[0] for line in table[4:]] == ["| smoothie", "| gaussian", "| simplex"]
    smoothie = results["smoothie"]
    assert table[4].split(" | ")[2] == f"{smoothie['sacrebleu']['1/1']:.2f} ± {smoothie['sacrebleu_sd']['1/1']:.2f}"
    assert (out / "sacrebleu_vs_steps.png").stat().st_size > 0 and (out / "results.json").is_file()
