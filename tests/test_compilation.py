"""compile_denoiser falls back to eager, with one log line, where no C++ compiler is installed."""

import logging

import torch

from smoothie_pl import compilation
from smoothie_pl.compilation import compile_in_place, cpp_compiler


def test_without_a_cpp_compiler_the_module_stays_eager_and_says_so(monkeypatch, caplog):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compilation.shutil, "which", lambda name: None)
    layer = torch.nn.Linear(2, 2)
    with caplog.at_level(logging.WARNING):
        assert compile_in_place(layer) is False
    assert layer._compiled_call_impl is None
    assert [r.getMessage() for r in caplog.records] == [
        "compile_denoiser: no C++ compiler found ($CXX, g++, c++, clang++): the denoiser runs eager"
    ]


def test_cxx_names_the_compiler_and_a_found_one_compiles(monkeypatch):
    monkeypatch.setenv("CXX", "my-c++")
    monkeypatch.setattr(compilation.shutil, "which", lambda name: f"/opt/bin/{name}" if name == "my-c++" else None)
    assert cpp_compiler() == "/opt/bin/my-c++"
    layer = torch.nn.Linear(2, 2)
    assert compile_in_place(layer) is True and layer._compiled_call_impl is not None


def test_a_gpu_module_compiles_without_a_cpp_compiler(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(compilation.shutil, "which", lambda name: None)
    assert compile_in_place(torch.nn.Linear(2, 2), device_type="cuda") is True  # inductor writes Triton there
