"""Checkpoints are read without running code, verified tensor by tensor, written atomically, and resumed from intact."""

import errno
import os
import warnings
import zipfile

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from smoothie_pl import checkpoint_io
from smoothie_pl.callbacks import VerifiedCheckpointIO
from smoothie_pl.checkpoint_io import (
    INTEGRITY_KEY,
    load_verified,
    newest_intact,
    remove_temporary_files,
    save_atomically,
    temporary_path,
)
from smoothie_pl.cli import build_cli, run
from smoothie_pl.errors import CheckpointError, CheckpointWriteError
from smoothie_pl.module import SmoothieModule

from .test_resume import write_config


class Payload:
    """Unpickling this writes the file ``marker``: what a crafted checkpoint could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


@pytest.fixture
def crafted(tmp_path):
    """A checkpoint-looking file whose pickle runs code, and the marker that code would write."""
    marker = tmp_path / "payload-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "loops": {}, "extra": Payload(marker)}, path)
    return path, marker


def test_a_crafted_payload_does_not_run_even_when_torch_is_told_to_unpickle(crafted, monkeypatch, word_model, pairs_dir):
    path, marker = crafted
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch < 2.6's default
    with pytest.warns(UserWarning, match="forcing weights_only=False"):
        torch.load(path)  # the control: a plain load under this setting runs the payload
    assert marker.read_text() == "ran"
    marker.unlink()

    with pytest.raises(CheckpointError, match=f"checkpoint {path} cannot be read \\(UnpicklingError"):
        load_verified(path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        SmoothieModule.load_from_checkpoint(path)
    assert run(["predict", "--config", str(write_config(path.with_suffix(".yaml"), word_model, pairs_dir, path.parent)),
                "--ckpt_path", str(path)]) == 1
    # Auto-resume: the payload is the run's newest checkpoint; it is skipped, and the run starts afresh.
    root = path.parent / "run"
    (root / "checkpoints").mkdir(parents=True)
    os.replace(path, root / "checkpoints" / "last.ckpt")
    config = write_config(root / "fit.yaml", word_model, pairs_dir, root)
    with pytest.warns(UserWarning, match="skipping checkpoint .*last.ckpt: .*cannot be read"):
        build_cli(["fit", "--config", str(config), "--trainer.max_steps", "1"])
    assert not marker.exists()
    assert load_verified(root / "checkpoints" / "epoch=0-step=1.ckpt")["global_step"] == 1


def record_span(path, suffix: str) -> tuple[int, int]:
    """Byte offset and length of the zip record whose name ends with ``suffix`` (read from its local header)."""
    with zipfile.ZipFile(path) as archive:
        info = next(info for info in archive.infolist() if info.filename.endswith(suffix))
    with open(path, "rb") as handle:
        handle.seek(info.header_offset + 26)
        name_length, extra_length = (int.from_bytes(handle.read(2), "little") for _ in range(2))
    return info.header_offset + 30 + name_length + extra_length, info.compress_size


def overwrite(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def small_checkpoint() -> dict:
    torch.manual_seed(0)
    return {
        "state_dict": {"a.weight": torch.randn(64, 64), "b.bias": torch.randn(8)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.randn(64, 64)}}}],
        "global_step": 3,
    }


def flat(checkpoint: dict) -> dict:
    """The tensors of ``small_checkpoint``, named by hand."""
    return {
        "state_dict/a.weight": checkpoint["state_dict"]["a.weight"],
        "state_dict/b.bias": checkpoint["state_dict"]["b.bias"],
        "optimizer_states/0/state/0/exp_avg": checkpoint["optimizer_states"][0]["state"][0]["exp_avg"],
    }


def test_changed_bytes_in_a_tensor_record_are_found_and_the_tensor_named(tmp_path):
    path = tmp_path / "model.ckpt"
    original = small_checkpoint()
    save_atomically(small_checkpoint(), path)
    assert load_verified(path)["global_step"] == 3
    offset, size = record_span(path, "data/0")
    overwrite(path, offset + size // 2, os.urandom(64))
    # Which tensor changed, found independently: torch reads the damaged file without complaint.
    damaged = torch.load(path, weights_only=True)
    changed = [name for name, tensor in flat(damaged).items() if not torch.equal(tensor, flat(original)[name])]
    assert len(changed) == 1
    with pytest.raises(CheckpointError) as error:
        load_verified(path)
    assert str(error.value) == f"checkpoint {path} is damaged: tensor {changed[0]} does not match its stored digest"


def test_non_finite_weights_are_refused_naming_the_first(tmp_path):
    checkpoint = small_checkpoint()
    checkpoint["state_dict"]["b.bias"][3] = float("inf")
    save_atomically(checkpoint, tmp_path / "inf.ckpt")
    with pytest.raises(CheckpointError, match=r"inf.ckpt holds non-finite weights: the first is state_dict/b.bias$"):
        load_verified(tmp_path / "inf.ckpt")


def test_a_checkpoint_without_digests_is_checked_by_its_zip_crcs(tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save(small_checkpoint(), path)
    assert INTEGRITY_KEY not in load_verified(path)
    offset, size = record_span(path, "data/0")
    overwrite(path, offset + 10, bytes(b ^ 0xFF for b in open(path, "rb").read()[offset + 10 : offset + 20]))
    with pytest.raises(CheckpointError, match="is damaged: record .*data/0 fails its CRC-32 check"):
        load_verified(path)


@pytest.mark.parametrize(
    "content, message",
    [(b"just some text\n", "cannot be read: it is not the zip archive torch.save writes"), (None, "cannot be read")],
    ids=["text", "truncated"],
)
def test_load_from_checkpoint_of_a_text_or_truncated_file_names_it(content, message, tmp_path):
    path = tmp_path / "bad.ckpt"
    if content is None:
        save_atomically(small_checkpoint(), path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} {message}"):
        SmoothieModule.load_from_checkpoint(path)
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path} is a directory"):
        SmoothieModule.load_from_checkpoint(tmp_path)


def failing_save(written: int):
    """A ``torch.save`` that writes ``written`` bytes, then fails as a full disk does."""

    def save(obj, handle):
        handle.write(b"x" * written)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return save


def test_a_full_disk_during_a_save_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_atomically(small_checkpoint(), path)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint_io.torch, "save", failing_save(1000))
    with pytest.raises(CheckpointWriteError, match="could not write checkpoint .*last.ckpt \\(No space left on device\\)"):
        save_atomically({"state_dict": {}}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def boring_trainer(root, max_steps: int) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        plugins=[VerifiedCheckpointIO()],
        callbacks=[ModelCheckpoint(dirpath=root, save_last=True, every_n_train_steps=1)],
    )


def test_a_trainer_whose_disk_fills_up_keeps_its_last_checkpoint(tmp_path, monkeypatch):
    boring_trainer(tmp_path, 2).fit(BoringModel())
    assert load_verified(tmp_path / "last.ckpt")["global_step"] == 2
    monkeypatch.setattr(checkpoint_io.torch, "save", failing_save(4096))
    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        boring_trainer(tmp_path, 4).fit(BoringModel(), ckpt_path=tmp_path / "last.ckpt")
    assert load_verified(tmp_path / "last.ckpt")["global_step"] == 2
    assert not list(tmp_path.glob(".*"))


def test_temporary_files_of_killed_saves_are_hidden_and_removed(tmp_path):
    leftover = temporary_path(tmp_path / "last.ckpt")
    leftover.write_bytes(b"half a checkpoint")
    assert not leftover.name.endswith(".ckpt") and leftover.name.startswith(".")
    (tmp_path / "keep.ckpt").write_bytes(b"")
    assert remove_temporary_files(tmp_path) == [leftover]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ckpt"]


def test_the_newest_intact_checkpoint_is_chosen_with_one_warning_per_skipped_file(tmp_path):
    paths = {name: tmp_path / f"{name}.ckpt" for name in ("intact", "truncated", "garbage", "foreign", "damaged")}
    save_atomically(small_checkpoint(), paths["intact"])
    save_atomically(small_checkpoint(), paths["truncated"])
    paths["truncated"].write_bytes(paths["truncated"].read_bytes()[:500])
    paths["garbage"].write_bytes(os.urandom(2000))
    save_atomically({"weights": torch.ones(3)}, paths["foreign"])
    save_atomically(small_checkpoint(), paths["damaged"])
    offset, size = record_span(paths["damaged"], "data/1")
    overwrite(paths["damaged"], offset, os.urandom(size))
    for age, name in enumerate(["damaged", "foreign", "garbage", "truncated", "intact"]):  # intact is the oldest
        os.utime(paths[name], (1_000_000 - age, 1_000_000 - age))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert newest_intact(paths.values(), required=["state_dict"]) == paths["intact"]
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 4
    for message, name in zip(messages, ["damaged", "foreign", "garbage", "truncated"]):
        assert message.startswith(f"skipping checkpoint {paths[name]}: "), message
    assert "is damaged: tensor" in messages[0] and "does not match its stored digest" in messages[0]
    assert "not one of this run's (no state_dict)" in messages[1]
    assert newest_intact([paths["garbage"]]) is None


@pytest.mark.slow
def test_fit_without_save_last_resumes_from_an_intact_checkpoint_past_a_damaged_newer_one(word_model, pairs_dir, tmp_path):
    config = write_config(tmp_path / "fit.yaml", word_model, pairs_dir, tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                         "init_args": {"every_n_train_steps": 1, "save_top_k": -1}}]
    config.write_text(yaml.safe_dump(settings))
    build_cli(["fit", "--config", str(config), "--trainer.max_steps", "2"])
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt"]
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04" + os.urandom(300))  # newer, and not a checkpoint
    temporary_path(folder / "epoch=0-step=3.ckpt").write_bytes(b"half of a killed write")
    with pytest.warns(UserWarning, match="skipping checkpoint .*last.ckpt"):
        build_cli(["fit", "--config", str(config), "--trainer.max_steps", "3"])
    assert load_verified(folder / "epoch=0-step=3.ckpt")["global_step"] == 3
    assert not list(folder.glob(".*"))
