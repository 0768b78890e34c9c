"""The fastest correct number format is chosen from the machine's features, and said in one line."""

from __future__ import annotations

import pytest
from jsonargparse import Namespace

from smoothie_pl import hardware
from smoothie_pl.cli import choose_precision
from smoothie_pl.module import vocab_compute_dtype


@pytest.fixture
def cpu_with(monkeypatch):
    def set_flags(*flags: str) -> None:
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(hardware, "default_device_type", lambda: "cpu")

    return set_flags


@pytest.mark.parametrize(
    ("flags", "native"),
    [(("fma", "avx2"), False), (("avx2", "avx512f"), False), (("avx512f", "avx512_bf16"), True), (("amx_bf16",), True)],
)
def test_bfloat16_is_native_only_with_the_cpu_features_that_compute_it(cpu_with, flags, native):
    cpu_with(*flags)
    assert hardware.native_bfloat16("cpu") is native
    assert hardware.fastest_precision("cpu") == ("bf16-mixed" if native else "32-true")
    assert hardware.fastest_vocab_dtype("cpu") == ("bfloat16" if native else "float32")


def test_cpu_flags_are_read_from_the_flags_line(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx2 avx512_bf16\n\n")
    real_path = hardware.Path
    monkeypatch.setattr(hardware, "Path", lambda name: cpuinfo if name == "/proc/cpuinfo" else real_path(name))
    hardware.cpu_flags.cache_clear()
    try:
        assert hardware.cpu_flags() == {"fpu", "sse", "avx2", "avx512_bf16"}
    finally:
        hardware.cpu_flags.cache_clear()


def test_auto_vocab_dtype_follows_the_hardware(cpu_with):
    import torch

    cpu_with("avx2")
    assert vocab_compute_dtype("auto") == torch.float32
    cpu_with("amx_bf16")
    assert vocab_compute_dtype("auto") == torch.bfloat16
    assert vocab_compute_dtype("float32") == torch.float32


def test_precision_left_out_is_chosen_and_an_explicit_one_is_kept(cpu_with):
    cpu_with("avx2")
    config = Namespace(trainer=Namespace(accelerator="cpu", precision=None))
    choose_precision(config)
    assert config.trainer.precision == "32-true"
    cpu_with("avx512_bf16")
    config = Namespace(trainer=Namespace(accelerator="auto", precision=None))
    choose_precision(config)
    assert config.trainer.precision == "bf16-mixed"
    cpu_with("avx2")
    config = Namespace(trainer=Namespace(accelerator="cpu", precision="bf16-mixed"))
    with pytest.warns(UserWarning, match="no native bfloat16"):
        choose_precision(config)
    assert config.trainer.precision == "bf16-mixed"
