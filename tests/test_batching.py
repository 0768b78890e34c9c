"""data.global_batch_size: the per-device batch and gradient accumulation derived from it."""

import lightning as L
import pytest
from jsonargparse import Namespace

from smoothie_pl.cli import derive_accumulation
from smoothie_pl.data.batching import split_global_batch
from smoothie_pl.errors import ConfigError

from .test_module import pairs_data


@pytest.mark.parametrize(
    ("global_batch", "world", "memory_limit", "expected"),
    [
        (256, 8, 64, (32, 1)),  # 32 per device fits: no accumulation
        (256, 2, 32, (32, 4)),  # 128 per device, 32 at a time
        (96, 1, 40, (32, 3)),  # 48 > 40, so three batches of 32
        (7, 1, 2, (1, 7)),  # a prime per-device share
    ],
)
def test_split_of_the_global_batch(global_batch, world, memory_limit, expected):
    assert split_global_batch(global_batch, world, memory_limit) == expected


def test_a_global_batch_not_divisible_by_the_devices_is_refused():
    with pytest.raises(ValueError, match="global_batch_size=30 must be a positive multiple of the 4 devices"):
        split_global_batch(30, 4, 8)


def test_fit_setup_takes_the_device_batch_and_refuses_another_accumulation(word_model, pairs_dir):
    data = pairs_data(pairs_dir, word_model, batch_size=2, global_batch_size=6)
    data.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, accumulate_grad_batches=3)
    data.setup("fit")
    assert data.trainer.accumulate_grad_batches == 3
    assert data.train_dataloader().batch_size == 2

    data = pairs_data(pairs_dir, word_model, batch_size=2, global_batch_size=6)
    data.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="needs trainer.accumulate_grad_batches=3, got 2: set data.global_batch_size"):
        data.setup("fit")


@pytest.mark.parametrize(("devices", "nodes", "expected"), [(1, 1, 3), (3, 1, 1), ("auto", 1, 3), (1, 3, 1)])
def test_the_cli_derives_the_accumulation_from_the_global_batch(devices, nodes, expected):
    config = Namespace()
    config["trainer.accelerator"], config["trainer.devices"], config["trainer.num_nodes"] = "cpu", devices, nodes
    config["data.init_args.global_batch_size"], config["data.init_args.batch_size"] = 6, 2
    config["trainer.accumulate_grad_batches"] = 1
    derive_accumulation(config)
    assert config["trainer.accumulate_grad_batches"] == expected


def test_the_cli_names_a_global_batch_the_devices_cannot_share():
    config = Namespace()
    config["trainer.accelerator"], config["trainer.devices"] = "cpu", 4
    config["data.init_args.global_batch_size"], config["data.init_args.batch_size"] = 6, 2
    with pytest.raises(ConfigError, match="global_batch_size=6 must be a positive multiple of the 4 devices"):
        derive_accumulation(config)
