"""The fused Triton kernel against the float64 literal formula fed the kernel's own Philox noise.

Runs on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``) and on a
GPU when there is one; skipped where triton is not installed.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the kernel's definition
pytest.importorskip("triton", reason="triton is not installed (it ships with CUDA builds of torch)")

from smoothie_pl.diffusion.fused_vocab_attention import fused_vocab_attention, philox_noise  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def literal_formula(query, embeddings, mu, std, sigma0, noise):
    distances = -torch.cdist(query.double(), embeddings.double()).pow(2) / (2 * sigma0**2)
    logits = mu.double()[:, None] * distances + std.double()[:, None] * noise.double()
    return torch.softmax(logits, dim=1) @ embeddings.double()


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(300, 24, generator=generator)  # V not a multiple of the 64-row tile
    query = embeddings[torch.randint(0, 300, (40,), generator=generator)] + 0.3 * torch.randn(40, 24, generator=generator)
    mu = torch.logspace(-3, 0, 40)  # 40 rows: not a multiple of the 32-row block
    std = torch.sqrt(1 - mu**2)
    return [x.to(DEVICE) for x in (query, embeddings, mu, std)]


BF16 = pytest.param(
    torch.bfloat16, 3e-2,
    marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 under Triton's CPU interpreter gave ~1e8 garbage (3.9.0)"),
)


@pytest.mark.parametrize("compute_dtype, tolerance", [(torch.float32, 1e-5), BF16])
def test_fused_kernel_equals_the_literal_formula_with_its_philox_noise(problem, compute_dtype, tolerance):
    query, embeddings, mu, std = problem
    fused = fused_vocab_attention(query, embeddings, mu, std, sigma0=1.5, seed=7, compute_dtype=compute_dtype)
    noise = philox_noise(40, 300, seed=7, device=DEVICE)
    assert 0.9 < noise.std() < 1.1 and abs(noise.mean()) < 0.05
    expected = literal_formula(query, embeddings, mu, std, 1.5, noise)
    assert (fused.double() - expected).norm() / expected.norm() < tolerance


def test_the_seed_changes_the_noise_and_a_generator_fixes_it(problem):
    query, embeddings, mu, std = problem
    run = lambda seed: fused_vocab_attention(  # noqa: E731
        query, embeddings, mu, std, sigma0=1.5, generator=torch.Generator(device=DEVICE).manual_seed(seed)
    )
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))
