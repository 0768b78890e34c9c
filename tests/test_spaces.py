"""The three diffusion spaces: each path against the literal formula of METHOD section 5."""

import math

import pytest
import torch
import torch.nn.functional as F

from smoothie_pl.diffusion import (
    ArctanSchedule,
    GaussianEmbeddingSpace,
    SdSchedule,
    SimplexSpace,
    SmoothieSpace,
    TessSchedule,
)


@pytest.fixture
def embeddings():
    return torch.randn(37, 8, generator=torch.Generator().manual_seed(0))


def chunked_noise(rows: int, vocab: int, chunk: int, seed: int) -> torch.Tensor:
    """The noise the streaming path draws: ``[rows, chunk]`` blocks in order from one generator."""
    generator = torch.Generator().manual_seed(seed)
    blocks = [torch.randn(rows, min(chunk, vocab - start), generator=generator) for start in range(0, vocab, chunk)]
    return torch.cat(blocks, dim=1)


def test_default_schedules_are_the_papers():
    e = torch.randn(5, 4)
    assert SmoothieSpace(e).schedule == ArctanSchedule()
    assert GaussianEmbeddingSpace(e).schedule == SdSchedule()
    assert SimplexSpace(e).schedule == TessSchedule()


def test_gaussian_input_is_mu_e_plus_std_noise(embeddings):
    space = GaussianEmbeddingSpace(embeddings)
    clean = embeddings[torch.tensor([[1, 2, 3], [4, 5, 6]])]
    t = torch.tensor([0.5, 0.25])
    out = space.noised_input(clean, t, torch.Generator().manual_seed(1), noise_scale=0.5)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    for b, time in enumerate((0.5, 0.25)):
        mu = 1 / math.sqrt(1 + 81 * math.tan(math.pi * time / 2) ** 2)
        assert torch.allclose(out[b], mu * clean[b] + 0.5 * math.sqrt(1 - mu**2) * noise[b], atol=1e-6)
    assert space.state_width == 8 and space.prior_input(2, 3, None).shape == (2, 3, 8)


@pytest.mark.parametrize("chunk_size", [37, 10])
def test_simplex_input_streams_the_literal_softmax(embeddings, chunk_size):
    """softmax(mu (2K onehot - K) + s eps) E, with the TESS mu and s worked by hand."""
    space = SimplexSpace(embeddings, chunk_size=chunk_size)
    tokens = torch.tensor([[3, 0, 36]])
    t = 0.3
    angle = lambda u: (u + 1e-4) / (1 + 1e-4) * math.pi / 2  # noqa: E731
    mu = math.cos(angle(t)) / math.cos(angle(0.0))
    std = 5 * math.sqrt(1 - mu**2)
    state = mu * (10 * F.one_hot(tokens[0], 37).double() - 5) + std * chunked_noise(3, 37, chunk_size, 2).double()
    expected = torch.softmax(state, dim=-1) @ embeddings.double()
    out = space.noised_input(embeddings[tokens], torch.tensor([t]), torch.Generator().manual_seed(2))
    assert torch.allclose(out[0].double(), expected, atol=1e-5)


def test_simplex_prior_is_softmax_of_k_times_noise(embeddings):
    out = SimplexSpace(embeddings, chunk_size=16).prior_input(1, 2, torch.Generator().manual_seed(5))
    expected = torch.softmax(5 * chunked_noise(2, 37, 16, 5).double(), -1) @ embeddings.double()
    assert torch.allclose(out[0].double(), expected, atol=1e-5)


def test_simplex_renoises_from_the_decoded_token(embeddings):
    space = SimplexSpace(embeddings)
    predicted = embeddings[torch.tensor([[7, 9]])] + 0.01
    t = torch.tensor([0.4])
    renoised = space.renoise_input(predicted, t, torch.Generator().manual_seed(3))
    exact = space.noised_input(embeddings[torch.tensor([[7, 9]])], t, torch.Generator().manual_seed(3))
    assert torch.equal(renoised, exact)


def test_simplex_clean_state_is_plus_minus_k(embeddings):
    state = SimplexSpace(embeddings).clean_state(embeddings[torch.tensor([[4, 11]])])
    assert state.shape == (1, 2, 37)
    assert state[0, 0, 4] == 5 and state[0, 1, 11] == 5 and (state == -5).sum() == 2 * 36


def test_smoothie_full_state_agrees_with_the_streaming_input(embeddings):
    """state_input(mu D0 + s eps) of the full-state path equals the streamed noised_input."""
    space = SmoothieSpace(embeddings, chunk_size=37)
    clean = embeddings[torch.tensor([[2, 30]])] + 0.1
    d0 = -torch.cdist(clean[0].double(), embeddings.double()).pow(2) / (2 * 1.5**2)
    assert torch.allclose(space.clean_state(clean)[0].double(), d0, atol=1e-4)
    mu, std = ArctanSchedule().marginal(torch.tensor([0.05]))
    state = mu * space.clean_state(clean) + std * chunked_noise(2, 37, 37, 6)
    streamed = space.noised_input(clean, torch.tensor([0.05]), torch.Generator().manual_seed(6))
    assert torch.allclose(space.state_input(state), streamed, atol=1e-5)


def test_tied_token_head_decodes_by_logits_not_distance():
    """Rows [1, 0] and [3, 0]: e0 = [1.2, 0] is nearest row 0, but its tied logit is larger for row 1."""
    e = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    predicted = torch.tensor([[[1.2, 0.0]]])
    assert SimplexSpace(e).decode(predicted).item() == 0
    tied = SimplexSpace(e, token_head="tied")
    assert tied.decode(predicted).item() == 1
    # Cross-entropy of logits (1.2, 3.6) for the true row 0 (the nearest row of the clean embedding).
    expected = -1.2 + math.log(math.exp(1.2) + math.exp(3.6))
    assert tied.token_loss(predicted, e[None, :1]).item() == pytest.approx(expected, rel=1e-6)
    assert SimplexSpace(e).token_loss(predicted, e[None, :1]) is None


def test_linear_token_head_is_trainable_and_bad_heads_are_named(embeddings):
    space = SimplexSpace(embeddings, token_head="linear")
    assert [tuple(p.shape) for p in space.parameters()] == [(37, 8), (37,)]
    with pytest.raises(ValueError, match="token_head"):
        SimplexSpace(embeddings, token_head="mlp")


LIVE = torch.tensor([[True, False, True], [False, True, False]])  # positions (0, 0), (0, 2), (1, 1)


def test_smoothie_draws_the_noise_of_live_positions_only(embeddings):
    """With ``live``, the streamed noise covers the 3 live positions in order; the other 3 get a zero input."""
    space = SmoothieSpace(embeddings, chunk_size=10)
    clean = embeddings[torch.tensor([[2, 30, 5], [7, 11, 19]])] + 0.1
    t = torch.tensor([0.3, 0.6])
    out = space.noised_input(clean, t, torch.Generator().manual_seed(4), live=LIVE)
    mu, std = ArctanSchedule().marginal(t.double())
    rows, times = clean[LIVE].double(), torch.tensor([0, 0, 1])
    d0 = -torch.cdist(rows, embeddings.double()).pow(2) / (2 * 1.5**2)
    state = mu[times, None] * d0 + std[times, None] * chunked_noise(3, 37, 10, 4).double()
    assert torch.allclose(out[LIVE].double(), torch.softmax(state, -1) @ embeddings.double(), atol=1e-5)
    assert torch.equal(out[~LIVE], torch.zeros(3, 8))
    prior = space.prior_input(2, 3, torch.Generator().manual_seed(5), live=LIVE)
    expected = torch.softmax(space.schedule.prior_std * chunked_noise(3, 37, 10, 5).double(), -1) @ embeddings.double()
    assert torch.allclose(prior[LIVE].double(), expected, atol=1e-5) and not prior[~LIVE].any()


def test_simplex_and_gaussian_inputs_are_zero_off_the_live_positions(embeddings):
    clean = embeddings[torch.tensor([[3, 0, 36], [1, 2, 4]])]
    t = torch.tensor([0.3, 0.3])
    simplex = SimplexSpace(embeddings, chunk_size=16)
    out = simplex.noised_input(clean, t, torch.Generator().manual_seed(2), live=LIVE)
    alone = simplex.noised_input(clean[LIVE][None], t[:1], torch.Generator().manual_seed(2))[0]
    assert torch.allclose(out[LIVE], alone, atol=1e-6) and not out[~LIVE].any()
    gaussian = GaussianEmbeddingSpace(embeddings)
    full = gaussian.noised_input(clean, t, torch.Generator().manual_seed(2))
    masked = gaussian.noised_input(clean, t, torch.Generator().manual_seed(2), live=LIVE)
    assert torch.equal(masked[LIVE], full[LIVE]) and not masked[~LIVE].any()
    assert not gaussian.prior_input(2, 3, torch.Generator().manual_seed(2), live=LIVE)[~LIVE].any()
