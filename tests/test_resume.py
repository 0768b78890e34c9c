"""`smoothie fit` resumes from the run's last.ckpt and ends where an uninterrupted run ends, bit for bit."""

import os
import warnings
from types import SimpleNamespace

import pytest
import torch
import yaml

from lightning.pytorch.callbacks import ModelCheckpoint

from smoothie_pl.checkpoint_io import save_atomically
from smoothie_pl.cli import build_cli, newest_checkpoint
from smoothie_pl.fingerprint import CHECKPOINT_KEY

STEPS = 6  # 8 pairs in batches of 2: four steps an epoch, the end inside the second epoch


def write_config(path, word_model, pairs_dir, root, trainer=(), data=(), callbacks=()):
    """A tiny fit config over ``pairs_dir``; ``trainer``/``data`` entries and extra ``callbacks`` are added."""
    files = {f"{split}_file": str(pairs_dir / f"{split}.jsonl") for split in ("train", "validation", "test")}
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "default_root_dir": str(root),
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True, "every_n_train_steps": 1},
                },
                *callbacks,
            ],
            **dict(trainer),
        },
        "model": {
            "embedding": word_model,
            "target_length": 8,
            "source_length": 10,
            "optim": {"warmup_steps": 4, "lr": 1e-2},
            "sampling": {"steps": 3},
            # The paper's dropout stays on: its masks must also be drawn again identically.
            "denoiser": {"width": 32, "depth": 2, "heads": 2, "encoder_depth": 1, "self_conditioning": True},
        },
        "data": {
            "class_path": "smoothie_pl.data.JsonlDataModule",
            "init_args": {**files, "batch_size": 2, **dict(data)},
        },
        "ema": {"decay": 0.9},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def fit(config, max_steps):
    build_cli(["fit", "--config", str(config), "--trainer.max_steps", str(max_steps)])


def last_checkpoint(root):
    return torch.load(root / "checkpoints/last.ckpt", weights_only=False)


@pytest.fixture(scope="module")
def whole(word_model, pairs_dir, tmp_path_factory):
    """The last checkpoint of an uninterrupted run."""
    root = tmp_path_factory.mktemp("whole")
    fit(write_config(root / "whole.yaml", word_model, pairs_dir, root), STEPS)
    return last_checkpoint(root)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [3, 4], ids=["mid-epoch", "epoch-end"])
def test_stopped_and_resumed_fit_equals_an_uninterrupted_one(whole, stop, word_model, pairs_dir, tmp_path):
    cut = write_config(tmp_path / "cut.yaml", word_model, pairs_dir, tmp_path)
    fit(cut, stop)
    assert last_checkpoint(tmp_path)["global_step"] == stop
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(cut, STEPS)  # no ckpt_path: finds checkpoints/last.ckpt under the run's default_root_dir
    assert not [w for w in caught if "not resumable" in str(w.message)]  # the data position is resumed

    resumed = last_checkpoint(tmp_path)
    assert resumed["global_step"] == whole["global_step"] == STEPS
    # Bitwise: the same operations on the same numbers in the same order on one CPU thread.
    # Lightning's EMA callback saves the average as state_dict and the raw weights beside it.
    for weights in ("state_dict", "current_model_state"):
        assert whole[weights].keys() == resumed[weights].keys()
        for name, tensor in whole[weights].items():
            assert torch.equal(tensor, resumed[weights][name]), (weights, name)
    assert int(resumed["averaging_state"]["n_averaged"]) == int(whole["averaging_state"]["n_averaged"]) == STEPS
    assert resumed["callbacks"]["SmoothieEMA"] == whole["callbacks"]["SmoothieEMA"]
    optimizer_states = (checkpoint["optimizer_states"][0]["state"].values() for checkpoint in (resumed, whole))
    for got, expected in zip(*optimizer_states):
        assert all(torch.equal(got[key], expected[key]) for key in expected)
    assert resumed["lr_schedulers"] == whole["lr_schedulers"]
    assert resumed["epoch"] == whole["epoch"]


@pytest.mark.parametrize("newest", ["runs/job/hpc_ckpt_1.ckpt", "runs/job/checkpoints/last.ckpt"])
def test_the_newest_checkpoint_is_found_as_an_absolute_path_from_a_relative_run_dir(newest, tmp_path, monkeypatch):
    # Slurm jobs pass a relative run dir; the path logged and restored must not depend on the working directory.
    monkeypatch.chdir(tmp_path)
    older = ({"runs/job/hpc_ckpt_1.ckpt", "runs/job/checkpoints/last.ckpt"} - {newest}).pop()
    for mtime, name in enumerate([older, newest]):
        save_atomically({"state_dict": {}, "loops": {}, CHECKPOINT_KEY: {}}, tmp_path / name)
        os.utime(tmp_path / name, (1_000_000 + mtime, 1_000_000 + mtime))
    trainer = SimpleNamespace(
        default_root_dir="runs/job",
        checkpoint_callbacks=[ModelCheckpoint(dirpath="runs/job/checkpoints")],
        is_global_zero=True,
    )
    assert newest_checkpoint(trainer) == tmp_path.resolve() / newest


def test_a_run_without_checkpoints_starts_fresh(tmp_path):
    trainer = SimpleNamespace(default_root_dir=str(tmp_path), checkpoint_callbacks=[ModelCheckpoint()], is_global_zero=True)
    assert newest_checkpoint(trainer) is None


@pytest.mark.slow
def test_a_resumed_qqp_fit_with_two_workers_equals_an_uninterrupted_one(word_model, pairs_dir, tmp_path):
    # QQP swaps source and target at random on every training draw; with two DataLoader workers the
    # swaps, the shuffle and the position inside the epoch must all come back on resume.
    from .test_tasks import save_raw

    def qqp_config(root):
        root.mkdir()
        path = write_config(root / "qqp.yaml", word_model, pairs_dir, root)
        config = yaml.safe_load(path.read_text())
        config["data"] = {
            "class_path": "smoothie_pl.data.QQPDataModule",
            "init_args": {"data_dir": str(tmp_path / "prepared"), "dataset": raw, "batch_size": 2, "num_workers": 2},
        }
        path.write_text(yaml.safe_dump(config))
        return path

    raw = save_raw("qqp", tmp_path)
    whole_root, cut_root = tmp_path / "whole", tmp_path / "cut"
    fit(qqp_config(whole_root), STEPS + 1)
    cut = qqp_config(cut_root)
    fit(cut, 3)
    saved = last_checkpoint(cut_root)
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"], "the training loader's state is saved"
    fit(cut, STEPS + 1)
    whole, resumed = last_checkpoint(whole_root), last_checkpoint(cut_root)
    assert resumed["global_step"] == whole["global_step"] == STEPS + 1
    for name, tensor in whole["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
