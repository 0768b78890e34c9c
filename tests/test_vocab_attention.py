import pytest
import torch

from smoothie_pl.diffusion import nearest_rows, noisy_vocab_attention


def literal_formula(query, embeddings, mu, std, sigma0, seed, chunk_size):
    """The reference code's way: materialise D, add the noise, softmax, multiply by E.

    The noise is drawn chunk by chunk with the same generator so that both
    paths see the same epsilon.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.cat(
        [
            torch.randn(query.shape[0], min(chunk_size, embeddings.shape[0] - start), generator=generator)
            for start in range(0, embeddings.shape[0], chunk_size)
        ],
        dim=1,
    )
    distances = -torch.cdist(query.double(), embeddings.double()).pow(2) / (2 * sigma0**2)
    logits = mu.double()[:, None] * distances + std.double()[:, None] * noise.double()
    return torch.softmax(logits, dim=1) @ embeddings.double()


@pytest.fixture
def problem():
    torch.manual_seed(0)
    embeddings = torch.randn(1000, 24)
    query = embeddings[torch.randint(0, 1000, (50,))] + 0.3 * torch.randn(50, 24)
    mu = torch.logspace(-4, 0, 50)
    std = torch.sqrt(1 - mu**2)
    return query, embeddings, mu, std


@pytest.mark.parametrize("chunk_size", [1000, 256, 97])
def test_streaming_equals_literal_formula_in_fp32(problem, chunk_size):
    query, embeddings, mu, std = problem
    streamed = noisy_vocab_attention(
        query, embeddings, mu, std, sigma0=1.5, generator=torch.Generator().manual_seed(3), chunk_size=chunk_size
    )
    expected = literal_formula(query, embeddings, mu, std, 1.5, seed=3, chunk_size=chunk_size)
    relative_error = (streamed.double() - expected).norm() / expected.norm()
    assert relative_error < 1e-5


def test_bf16_matmuls_stay_close(problem):
    query, embeddings, mu, std = problem
    streamed = noisy_vocab_attention(
        query, embeddings, mu, std, sigma0=1.5, generator=torch.Generator().manual_seed(3), chunk_size=256,
        compute_dtype=torch.bfloat16,
    )
    expected = literal_formula(query, embeddings, mu, std, 1.5, seed=3, chunk_size=256)
    assert (streamed.double() - expected).norm() / expected.norm() < 3e-2


def test_noise_free_small_kernel_returns_the_nearest_row(problem):
    query, embeddings, _, _ = problem
    ones = torch.ones(query.shape[0])
    out = noisy_vocab_attention(query, embeddings, ones * 1e3, ones * 0.0, sigma0=1.0, chunk_size=128)
    nearest = torch.cdist(query, embeddings).argmin(dim=1)
    torch.testing.assert_close(out, embeddings[nearest])


@pytest.mark.parametrize("chunk_size", [1000, 64, 7])
def test_nearest_rows_is_the_l2_argmin(problem, chunk_size):
    query, embeddings, _, _ = problem
    assert torch.equal(nearest_rows(query, embeddings, chunk_size=chunk_size), torch.cdist(query, embeddings).argmin(1))


def test_a_fixed_generator_gives_a_fixed_result(problem):
    query, embeddings, mu, std = problem
    run = lambda seed: noisy_vocab_attention(  # noqa: E731
        query, embeddings, mu, std, sigma0=1.5, generator=torch.Generator().manual_seed(seed)
    )
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_chunk_size_must_be_positive(problem):
    query, embeddings, mu, std = problem
    with pytest.raises(ValueError, match="chunk_size"):
        noisy_vocab_attention(query, embeddings, mu, std, sigma0=1.5, chunk_size=0)
