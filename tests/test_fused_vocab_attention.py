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


def make_problem(dim: int):
    generator = torch.Generator().manual_seed(0)
    # Standardised embeddings as the library uses them, scaled so the kernel's softmax is neither flat nor one-hot.
    embeddings = torch.randn(300, dim, generator=generator) * (24 / dim) ** 0.5  # V not a multiple of the 64-row tile
    query = embeddings[torch.randint(0, 300, (40,), generator=generator)]
    query = query + 0.3 * (24 / dim) ** 0.5 * torch.randn(40, dim, generator=generator)
    mu = torch.logspace(-3, 0, 40)  # 40 rows: not a multiple of the 32-row block
    std = torch.sqrt(1 - mu**2)
    return [x.to(DEVICE) for x in (query, embeddings, mu, std)]


@pytest.fixture
def problem():
    return make_problem(24)


# d = 384 (MiniLM) and 768 (BERT) are larger than one tile over d; 24 is smaller than one.
@pytest.mark.parametrize("dim", [24, 384, pytest.param(768, marks=pytest.mark.slow)])  # 768: 15 s interpreted
@pytest.mark.parametrize("compute_dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_fused_kernel_equals_the_literal_formula_with_its_philox_noise(dim, compute_dtype, tolerance):
    query, embeddings, mu, std = make_problem(dim)
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
