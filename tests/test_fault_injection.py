"""``smoothie fit`` and ``smoothie predict`` killed with SIGKILL at seeded moments, then rerun, end as if never killed.

Each kill is one process (tests/scripts/kill_at.py) killed at a moment counted from
its own start: after a training step, part-way through a checkpoint write, between
a write and its rename, part-way through a predictions batch or the final merge. The
runs continue one another in the same run folder, as a user's reruns would.
"""

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from smoothie_pl.checkpoint_io import load_verified

from .test_cli import ROOT
from .test_resume import write_config

KILLER = ROOT / "tests" / "scripts" / "kill_at.py"
STEPS = 6
KILLS = 10


def smoothie(arguments: list[str], moment: tuple[str, int, float] = ("none", 0, 0.0)) -> int:
    """Exit status of ``smoothie arguments`` killed at ``moment`` (-9 when it was)."""
    event, count, fraction = moment
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, str(KILLER), event, str(count), str(fraction), *arguments]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode in (0, -9), done.stderr[-3000:]
    return done.returncode


def fit_config(path: Path, word_model, pairs_dir, root: Path) -> Path:
    """test_resume's tiny run, keeping a checkpoint of every step (so that none may be lost)."""
    config = write_config(path, word_model, pairs_dir, root, data={"eval_batch_size": 2})
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["callbacks"][0]["init_args"]["save_top_k"] = -1
    config.write_text(yaml.safe_dump(settings))
    return config


def complete_checkpoints(folder: Path) -> dict[str, str]:
    """SHA-256 of every step checkpoint in ``folder`` that loads and verifies."""
    complete = {}
    for path in folder.glob("epoch=*.ckpt"):
        try:
            load_verified(path)
        except Exception:
            continue
        complete[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return complete


def assert_same_weights(got: dict, expected: dict) -> None:
    assert got["global_step"] == expected["global_step"] == STEPS
    for entry in ("state_dict", "current_model_state"):
        assert got[entry].keys() == expected[entry].keys()
        for name, tensor in expected[entry].items():
            assert torch.equal(got[entry][name], tensor), (entry, name)


def fit_moments(seed: int) -> list[tuple[str, int, float]]:
    """``KILLS`` seeded moments, at least half of them inside a checkpoint write or rename."""
    rng = random.Random(seed)
    writes = [("write", rng.randint(1, 4), round(rng.uniform(0.05, 0.95), 2)) for _ in range(KILLS // 2)]
    others = [(rng.choice(["step", "replace"]), rng.randint(1, 3), 0.0) for _ in range(KILLS - len(writes))]
    moments = writes + others
    rng.shuffle(moments)
    return moments


@pytest.mark.slow
def test_fit_and_predict_killed_at_ten_moments_end_as_uninterrupted_runs(word_model, pairs_dir, tmp_path):
    whole_root, cut_root = tmp_path / "whole", tmp_path / "cut"
    whole = fit_config(tmp_path / "whole.yaml", word_model, pairs_dir, whole_root)
    cut = fit_config(tmp_path / "cut.yaml", word_model, pairs_dir, cut_root)
    fit = ["fit", "--trainer.max_steps", str(STEPS), "--config"]
    assert smoothie([*fit, str(whole)]) == 0
    expected = load_verified(whole_root / "checkpoints" / "last.ckpt")

    killed = 0
    for moment in fit_moments(seed=15):
        before = complete_checkpoints(cut_root / "checkpoints")
        killed += smoothie([*fit, str(cut)], moment) == -9
        after = complete_checkpoints(cut_root / "checkpoints")
        lost = {name for name, digest in before.items() if after.get(name) != digest}
        assert not lost, (moment, lost)
    assert smoothie([*fit, str(cut)]) == 0
    assert killed >= KILLS // 2  # most moments come before the run's end
    assert_same_weights(load_verified(cut_root / "checkpoints" / "last.ckpt"), expected)

    # predict: 8 test pairs in 4 batches of 2; reruns complete the killed one's predictions.
    checkpoint = str(whole_root / "checkpoints" / "last.ckpt")
    predict = ["predict", "--config", str(whole), "--ckpt_path", checkpoint, "--trainer.limit_predict_batches", "4"]
    assert smoothie([*predict, "--trainer.default_root_dir", str(tmp_path / "whole_predict")]) == 0
    resumed = [*predict, "--trainer.default_root_dir", str(tmp_path / "cut_predict"),
               "--prediction_writer.if_exists", "resume"]
    for moment in [("batch", 2, 0.5), ("batch", 1, 0.0), ("merge", 1, 0.5)]:
        assert smoothie(resumed, moment) == -9
    assert smoothie(resumed) == 0
    reference = (tmp_path / "whole_predict" / "predictions.jsonl").read_text()
    assert len(reference.splitlines()) == 8
    assert (tmp_path / "cut_predict" / "predictions.jsonl").read_text() == reference
    assert not list((tmp_path / "cut_predict").glob("predictions.jsonl.*"))
