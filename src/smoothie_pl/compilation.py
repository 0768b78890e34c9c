"""``torch.compile`` of a module in place where it can work, eager where it cannot."""

from __future__ import annotations

import logging
import os
import shutil

from torch import nn

log = logging.getLogger(__name__)


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would use on a CPU (``$CXX``, else ``g++``, ``c++`` or ``clang++``), if installed."""
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    return next((path for path in map(shutil.which, candidates) if path), None)


def compile_in_place(module: nn.Module, device_type: str = "cpu") -> bool:
    """Compile ``module`` in place (weights and state-dict keys unchanged); False, and one log line, where it cannot.

    On a CPU inductor writes and builds C++: without a compiler it would fail at
    the first forward, deep inside a training step, so the module stays eager.
    """
    if device_type == "cpu" and cpp_compiler() is None:
        log.warning("compile_denoiser: no C++ compiler found ($CXX, g++, c++, clang++): the denoiser runs eager")
        return False
    module.compile()
    return True
