import pytest
import torch

from smoothie_pl.diffusion import SmoothieSpace, literal_vocab_attention, nearest_rows, noisy_vocab_attention
from smoothie_pl.diffusion.vocab_attention import distinct_rows, half_squared_norms


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


@pytest.mark.parametrize("compute_dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_repeated_query_rows_share_their_distances_but_not_their_noise(compute_dtype, tolerance):
    """Clean targets and clamped predictions repeat vocabulary rows: the shared matmul must not share noise."""
    torch.manual_seed(0)
    embeddings = torch.randn(1000, 24)
    query = embeddings[torch.tensor([5, 7, 5, 5, 9, 7] * 10)]
    mu, std = torch.full((60,), 0.05), torch.ones(60)
    distinct, row_of = distinct_rows(query)
    assert distinct.shape == (3, 24) and torch.equal(distinct[row_of], query)
    streamed = noisy_vocab_attention(
        query, embeddings, mu, std, sigma0=1.5, generator=torch.Generator().manual_seed(3), chunk_size=256,
        compute_dtype=compute_dtype,
    )
    expected = literal_formula(query, embeddings, mu, std, 1.5, seed=3, chunk_size=256)
    assert (streamed.double() - expected).norm() / expected.norm() < tolerance
    assert not torch.allclose(streamed[0], streamed[2])  # the same token, its own noise


def test_mostly_distinct_rows_are_not_deduplicated():
    query = torch.randn(8, 4)
    query[1] = query[0]  # one repeat in eight: below the 25 % that pays for the search
    kept, row_of = distinct_rows(query)
    assert row_of is None and kept is query
    query[2:4] = query[0]
    distinct, row_of = distinct_rows(query)
    assert distinct.shape[0] == 5 and torch.equal(distinct[row_of], query)


def test_rows_that_share_a_projection_are_still_told_apart():
    """Rows are grouped by one projection first; two different rows with the same one must not merge."""
    # distinct_rows projects onto linspace(1, 2, d) = (1, 2) for d = 2: both rows project to 2.
    query = torch.tensor([[2.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
    distinct, row_of = distinct_rows(query)
    assert distinct.shape == (2, 2) and torch.equal(distinct[row_of], query)
    assert row_of[0] == row_of[2] == row_of[4] != row_of[1] == row_of[3] == row_of[5]


@pytest.mark.parametrize("autocast", [False, True])
def test_clamped_rows_are_grouped_one_row_per_token(autocast, monkeypatch):
    """Without the row-wise unique (it copies every row on its own), also under bf16 autocast, where training and
    sampling run and which would round the projection to bf16, merging different rows."""
    unique = torch.unique

    def unique_of_numbers_only(values, *args, **kwargs):
        assert kwargs.get("dim") is None, "the row-wise unique ran although the projections tell the rows apart"
        return unique(values, *args, **kwargs)

    monkeypatch.setattr(torch, "unique", unique_of_numbers_only)
    torch.manual_seed(0)
    embeddings = torch.randn(2000, 64)
    tokens = torch.randint(0, 2000, (600,)) % 150
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        distinct, row_of = distinct_rows(embeddings[tokens])
    assert torch.equal(distinct[row_of], embeddings[tokens])
    assert sorted(distinct.tolist()) == sorted(embeddings[tokens.unique()].tolist())


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


@pytest.mark.parametrize("chunk_size", [1000, 7])
def test_nearest_rows_in_bf16_picks_the_argmin_or_a_near_tie(problem, chunk_size):
    """A bf16 copy of E (the sampler's clamp): each pick within bf16 rounding of the true nearest distance.

    Rounding q and E_j to bf16 (2^-9 each) and the product (2^-9) moves ``q . E_j`` by at most about
    1.5 * 2^-8 |q| |E_j|; ``|q - E_j|^2 = |q|^2 - 2 (q . E_j - |E_j|^2 / 2)``, so the pick's squared distance
    exceeds the least by at most 4 such errors.
    """
    query, embeddings, _, _ = problem
    distances = torch.cdist(query.double(), embeddings.double())
    picked = nearest_rows(query, embeddings.bfloat16(), chunk_size=chunk_size, half_sq_norms=half_squared_norms(embeddings))
    best = distances.min(1).values
    chosen = distances.gather(1, picked[:, None]).squeeze(1)
    assert bool((chosen.pow(2) <= best.pow(2) + 4 * 1.5 * 2**-8 * (query.norm(dim=1) * embeddings.norm(dim=1).max())).all())
    assert (picked == distances.argmin(1)).float().mean() > 0.9


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


@pytest.mark.parametrize("compute_dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_library_literal_formulation_equals_the_float64_formula(problem, compute_dtype, tolerance):
    query, embeddings, mu, std = problem
    literal = literal_vocab_attention(
        query, embeddings, mu, std, sigma0=1.5, generator=torch.Generator().manual_seed(3), chunk_size=97,
        compute_dtype=compute_dtype,
    )
    expected = literal_formula(query, embeddings, mu, std, 1.5, seed=3, chunk_size=97)
    assert (literal.double() - expected).norm() / expected.norm() < tolerance


@pytest.mark.parametrize("compute_dtype", [torch.float32, torch.bfloat16])
def test_streaming_and_literal_formulation_agree_with_the_same_noise(problem, compute_dtype):
    query, embeddings, mu, std = problem
    outputs = [
        attention(
            query, embeddings, mu, std, sigma0=1.5, generator=torch.Generator().manual_seed(5), chunk_size=128,
            compute_dtype=compute_dtype,
        )
        for attention in (noisy_vocab_attention, literal_vocab_attention)
    ]
    other_noise = literal_vocab_attention(
        query, embeddings, mu, std, sigma0=1.5, generator=torch.Generator().manual_seed(6), chunk_size=128,
        compute_dtype=compute_dtype,
    )
    # Both paths round their matmuls alike, so they agree far better than a different noise draw does.
    gap = (outputs[0] - outputs[1]).norm()
    assert gap < 0.05 * (other_noise - outputs[1]).norm()
    assert gap / outputs[1].norm() < (1e-5 if compute_dtype == torch.float32 else 1e-2)


def test_underflowing_logits_are_floored_without_changing_the_result():
    """At tiny kernel widths every logit but the nearest row's underflows exp; the floor must not leak mass."""
    torch.manual_seed(1)
    embeddings = torch.randn(3000, 16) * 3
    query = embeddings[:40] + 0.01 * torch.randn(40, 16)
    ones = torch.ones(40)
    out = noisy_vocab_attention(query, embeddings, ones * 50.0, ones * 0.0, sigma0=1.0, chunk_size=256)
    torch.testing.assert_close(out, embeddings[:40], rtol=0, atol=1e-6)


def test_a_space_swaps_in_the_literal_formulation_by_name(problem):
    query, embeddings, _, _ = problem
    spaces = [SmoothieSpace(embeddings, chunk_size=100, vocab_attention=name) for name in ("streaming", "literal")]
    t = torch.linspace(0.05, 0.95, 5)
    clean = query[:40].view(5, 8, 24)
    streamed, literal = (s.noised_input(clean, t, torch.Generator().manual_seed(0)) for s in spaces)
    torch.testing.assert_close(streamed, literal, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="vocab_attention must be one of"):
        SmoothieSpace(embeddings, vocab_attention="flash")
