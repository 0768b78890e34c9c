"""Which number formats the machine computes fast, so defaults pick the fastest correct path.

bfloat16 matmuls are 3-5x faster than float32 where the hardware has them
(CUDA GPUs from Ampere on, x86 CPUs with AVX512-BF16 or AMX), and far slower
where it does not: an AVX2-only CPU emulates them, at about 0.7 GFLOP/s
against 48 GFLOP/s in float32 on one core of an AMD EPYC.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bfloat16(device_type: str) -> bool:
    """Whether bfloat16 matmuls run natively (fast) on this machine's ``"cpu"`` or ``"cuda"`` device."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return any(flag in cpu_flags() for flag in CPU_BF16_FLAGS)
    return False


def default_device_type() -> str:
    """The device Lightning's ``accelerator: auto`` trains on here: ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def fastest_precision(device_type: str) -> str:
    """Lightning's ``precision`` for training here: ``"bf16-mixed"`` where bfloat16 is native, else ``"32-true"``."""
    return "bf16-mixed" if native_bfloat16(device_type) else "32-true"


def fastest_vocab_dtype(device_type: str) -> str:
    """``vocab_dtype`` for the vocabulary matmuls here: ``"bfloat16"`` where native, else ``"float32"``."""
    return "bfloat16" if native_bfloat16(device_type) else "float32"
