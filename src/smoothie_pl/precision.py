"""Which number formats a device multiplies fast, and the dtype choices that follow from it.

bf16 is only a speed-up where the hardware has bf16 units (CUDA GPUs from
Ampere on; CPUs with AVX512-BF16 or AMX). Elsewhere oneDNN emulates it: on an
AVX2-only AMD EPYC a bf16 matmul of demo size ran 5-7x slower than fp32, and a
2048-square one 400x slower; on an AVX-512 Xeon without AVX512-BF16 (where oneDNN
still reports bf16 support) a ``2048 x 384 x 1024`` one ran 4x slower. There fp32
is both the faster and the more exact path.
"""

from __future__ import annotations

import contextlib
import functools

import torch

VOCAB_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""The dtypes the vocabulary matmuls can be asked for by name, besides ``"auto"``."""


BF16_INSTRUCTION_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
"""torch.cpu's probes of the instructions that multiply bf16 natively (x86)."""


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 in hardware: the AVX512-BF16 or AMX instructions, and oneDNN to use them.

    oneDNN alone is not enough: it reports bf16 support on any AVX-512 CPU, where it emulates it.
    """
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False
    instructions = (getattr(torch.cpu, name, lambda: False)() for name in BF16_INSTRUCTION_PROBES)
    return onednn and any(instructions)


def fast_bf16(device: torch.device | str) -> bool:
    """Whether bf16 matmuls on ``device`` are faster than fp32 ones."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16_units()
    return False


PRECISIONS = ("32-true", "bf16-mixed")
"""The precisions ``smoothie generate`` takes besides ``"auto"``, named as Lightning's trainer names them."""


def default_precision(device: torch.device | str) -> str:
    """``bf16-mixed`` where bf16 is fast on ``device``, else ``32-true``: what a run that names none computes in."""
    device = torch.device(device)
    return "bf16-mixed" if device.type in ("cpu", "cuda") and fast_bf16(device) else "32-true"


def precision_autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast of a trainer precision (``bf16-mixed`` or ``32-true``) on ``device``, outside a trainer."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def vocab_compute_dtype(option: str, device: torch.device | str) -> torch.dtype:
    """The dtype of the vocabulary matmuls: ``option`` by name, or for ``"auto"`` bf16 where it is fast, else fp32."""
    if option == "auto":
        return torch.bfloat16 if fast_bf16(device) else torch.float32
    return VOCAB_DTYPES[option]


def emulated_bf16_autocast(device: torch.device) -> bool:
    """True inside a bf16 autocast on a CPU without bf16 units (e.g. Lightning's ``bf16-mixed`` there)."""
    return (
        device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not cpu_has_bf16_units()
    )


def fastest_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Leaves the autocast as it is, except an emulated bf16 one, which it switches off (fp32 is faster there)."""
    if emulated_bf16_autocast(device):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


def compute_path(
    device: torch.device, precision: str, vocab_dtype: torch.dtype, vocab_option: str, compiled: bool
) -> str:
    """What the run computes in, said at setup: an asked-for bf16 that this CPU would emulate runs in fp32."""
    emulated = device.type == "cpu" and "bf16" in precision and not fast_bf16(device)
    matmuls = f"fp32 ({precision} asked, but this CPU has no bf16 units)" if emulated else precision
    vocab = str(vocab_dtype).removeprefix("torch.")
    return (
        f"compute path on {device}: model matmuls {matmuls}, vocabulary matmuls {vocab} (vocab_dtype {vocab_option}), "
        f"denoiser {'compiled' if compiled else 'eager'}"
    )
