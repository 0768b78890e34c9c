"""bf16 where the hardware has it, fp32 where it would be emulated; the module says which path it runs."""

from pathlib import Path

import lightning as L
import pytest
import torch

from smoothie_pl import precision
from smoothie_pl.precision import fastest_autocast, vocab_compute_dtype

from .test_module import pairs_data, tiny_module


@pytest.fixture(params=[True, False], ids=["bf16 units", "no bf16 units"])
def bf16_units(request, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: request.param)
    return request.param


def test_auto_takes_bf16_only_where_the_cpu_has_bf16_units(bf16_units):
    assert vocab_compute_dtype("auto", "cpu") == (torch.bfloat16 if bf16_units else torch.float32)
    assert vocab_compute_dtype("auto", "meta") == torch.float32  # a device type without a fast bf16
    assert vocab_compute_dtype("bfloat16", "cpu") == torch.bfloat16  # a named dtype is taken as asked
    assert vocab_compute_dtype("float32", "cpu") == torch.float32


def test_an_emulated_bf16_autocast_is_switched_off_and_a_real_one_kept(bf16_units):
    layer = torch.nn.Linear(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16), fastest_autocast(torch.device("cpu")):
        dtype = layer(torch.ones(2, 4)).dtype
    assert dtype == (torch.bfloat16 if bf16_units else torch.float32)
    with fastest_autocast(torch.device("cpu")):  # no autocast asked: nothing to switch
        assert layer(torch.ones(2, 4)).dtype == torch.float32


@pytest.mark.parametrize(
    ("onednn", "avx512_bf16", "amx", "expected"),
    [(True, False, False, False), (True, True, False, True), (True, False, True, True), (False, True, True, False)],
)
def test_bf16_units_need_the_instructions_not_only_onednn(monkeypatch, onednn, avx512_bf16, amx, expected):
    # oneDNN reports bf16 support on any AVX-512 CPU, where it emulates bf16 4x slower than fp32.
    precision.cpu_has_bf16_units.cache_clear()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    try:
        assert precision.cpu_has_bf16_units() is expected
    finally:
        precision.cpu_has_bf16_units.cache_clear()


def test_bf16_units_agree_with_the_kernels_cpu_flags():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags on this system")
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    precision.cpu_has_bf16_units.cache_clear()
    assert precision.cpu_has_bf16_units() == ("avx512_bf16" in flags or "amx_bf16" in flags)


@pytest.mark.slow  # a one-step fit: about 10 s on 2 busy cores
def test_a_bf16_mixed_fit_on_a_cpu_without_bf16_units_computes_fp32_and_says_so(
    word_model, pairs_dir, tmp_path, monkeypatch
):
    import smoothie_pl.module

    monkeypatch.setattr(precision, "cpu_has_bf16_units", lambda: False)
    said = []  # Lightning's logger may not propagate to pytest's capture, depending on import order
    monkeypatch.setattr(smoothie_pl.module, "rank_zero_info", said.append)
    module = tiny_module(word_model)
    seen = []
    module.denoiser.register_forward_hook(lambda _, inputs, output: seen.append(output.dtype))
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", max_steps=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=pairs_data(pairs_dir, word_model, batch_size=4))
    assert seen == [torch.float32]
    assert module.space.compute_dtype == torch.float32
    lines = [line for line in said if "compute path" in line]
    assert len(lines) == 1
    assert "fp32 (bf16-mixed asked, but this CPU has no bf16 units)" in lines[0]
    assert "vocabulary matmuls float32 (vocab_dtype auto)" in lines[0] and "denoiser eager" in lines[0]


@pytest.mark.parametrize(
    ("accelerator", "asked", "chosen_with_units", "chosen_without"),
    [
        ("cpu", None, "bf16-mixed", "32-true"),
        ("auto", None, "bf16-mixed", "32-true"),  # no GPU on the test machines: auto is the CPU
        ("cpu", "bf16-mixed", "bf16-mixed", "bf16-mixed"),  # asked for: kept (the module computes fp32 there)
        ("cpu", "32-true", "32-true", "32-true"),
    ],
)
def test_a_precision_left_out_is_chosen_for_the_hardware(bf16_units, accelerator, asked, chosen_with_units, chosen_without):
    from jsonargparse import Namespace

    from smoothie_pl.cli import choose_precision

    if accelerator == "auto" and torch.cuda.is_available():
        pytest.skip("auto is a GPU here")
    config = Namespace(trainer=Namespace(accelerator=accelerator, precision=asked))
    choose_precision(config)
    assert config.trainer.precision == (chosen_with_units if bf16_units else chosen_without)
