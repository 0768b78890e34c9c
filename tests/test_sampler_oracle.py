"""Every sampler with every schedule, run with a denoiser that returns the true x0 (an oracle).

With an exact prediction the state a sampler hands the model at ``t_k`` must be
a draw of the forward marginal ``mu(t_k) x0 + s(t_k) eps``. The test checks the
mean and std of that state over ``SAMPLES`` independent chains, element by
element and at every step of the default 200-step grid, and that the output
is x0. The first state is the prior ``N(0, prior_std^2)`` itself, which the
marginal at ``t = 1`` only approximates (``mu(1)`` is 0.014 for the sqrt schedule).

Tolerance: five standard errors of the estimate (``s / sqrt(n)`` for the mean,
``s / sqrt(2 n)`` for the std), plus, for the SDE sampler only, a stated
discretisation allowance of 4 % of ``s`` (Euler-Maruyama sub-steps of 5 % of
the variance scale; exact samplers get none). The re-noise sampler's loop is
checked against METHOD section 4 written out naively with the full ``[B, L, V]``
state: its model inputs must have the same mean and std as that loop's.
"""

import pytest
import torch

from smoothie_pl.diffusion import SCHEDULES, SPACES, build_sampler, build_schedule

SAMPLES = 8_000
STEPS = 200
SE_LIMIT = 5.0
DISCRETISATION = {"ddim": 0.0, "ddpm": 0.0, "sde": 0.04}
VOCAB = torch.tensor(
    [[0.0, 0.0, 0.0], [1.0, 0.5, -0.5], [-1.0, 0.8, 0.3], [0.4, -1.2, 0.9], [2.0, 0.1, -1.0], [-0.3, -0.4, 1.6]]
)
TOKENS = [1, 4]  # the clean sequence, L = 2


def oracle(x0: torch.Tensor):
    def denoise(x, t):
        return x0.expand(x.shape[0], -1, -1).clone()

    return denoise


def marginal(schedule, grid, k):
    """``(mu, std)`` at ``t_k``; at ``k = 0`` the prior's (mean 0)."""
    if k == 0:
        return 0.0, schedule.prior_std
    return (value.item() for value in schedule.marginal(grid[k : k + 1]))


def assert_marginal(state, mean, std, allowance, where):
    """Per-element sample mean and std of ``state [n, ...]`` against the marginal's ``mean`` and ``std``."""
    n = state.shape[0]
    mean_error = (state.mean(0) - mean).abs().max().item()
    std_error = (state.std(0) - std).abs().max().item()
    assert mean_error <= SE_LIMIT * std / n**0.5 + allowance * std, f"{where}: mean off by {mean_error:.4f} (s={std:.4f})"
    assert std_error <= SE_LIMIT * std / (2 * n) ** 0.5 + allowance * std, f"{where}: std off by {std_error:.4f} (s={std:.4f})"


@pytest.mark.slow
@pytest.mark.parametrize("schedule_name", sorted(SCHEDULES))
@pytest.mark.parametrize("sampler_name", ["ddim", "ddpm", "sde"])
def test_state_samplers_follow_the_marginal_with_an_exact_prediction(sampler_name, schedule_name):
    """In the Gaussian embedding space the state is what the model sees, so the callback observes it."""
    schedule = build_schedule({"name": schedule_name}, "sd")
    space = SPACES["gaussian"](VOCAB, schedule)
    x0 = VOCAB[TOKENS].unsqueeze(0)
    sampler = build_sampler(sampler_name, steps=STEPS)
    grid = sampler.timesteps()
    checked = []

    def check(k, t, x, e0):
        mu, std = marginal(schedule, grid, k)
        assert_marginal(x, mu * x0[0], std, DISCRETISATION[sampler_name], f"{sampler_name}/{schedule_name} k={k}")
        checked.append(k)

    out = sampler.sample(space, oracle(x0), SAMPLES, len(TOKENS), torch.Generator().manual_seed(0), callback=check)
    assert checked == list(range(STEPS))
    assert torch.equal(out, x0.expand(SAMPLES, -1, -1))


def naive_renoise_inputs(space, x0, grid, generator):
    """METHOD section 4 as written: D <- prior; each step D = mu D0(e0) + s eps_fresh; the model sees softmax(D) E."""
    schedule, embeddings = space.schedule, space.embeddings
    if isinstance(space, SPACES["smoothie"]):
        distances = ((x0.unsqueeze(-2) - embeddings) ** 2).sum(-1)  # [1, L, V]
        clean = -distances / (2 * space.sigma0**2)
    else:  # simplex: K (2 onehot - 1) of the decoded tokens
        onehot = torch.nn.functional.one_hot(torch.tensor([TOKENS]), len(embeddings)).float()
        clean = schedule.prior_std * (2 * onehot - 1)
    shape = (SAMPLES, len(TOKENS), len(embeddings))
    state = torch.randn(shape, generator=generator) * schedule.prior_std
    inputs = []
    for k in range(len(grid) - 1):
        inputs.append(torch.softmax(state, -1) @ embeddings)
        mu, std = (value.item() for value in schedule.marginal(grid[k + 1 : k + 2]))
        state = mu * clean + std * torch.randn(shape, generator=generator)
    return inputs


def std_variance(x):
    """Variance of the sample std of ``x [n, ...]`` for any law: ``(m4 - s^4) / (4 s^2 n)`` (delta method).

    The model inputs of the vocabulary spaces are far from Gaussian (near one-hot
    softmax read-outs), so the Gaussian ``s^2 / (2 n)`` would understate it.
    """
    centred = x - x.mean(0)
    var, m4 = centred.pow(2).mean(0), centred.pow(4).mean(0)
    return (m4 - var.pow(2)).clamp_min(0) / (4 * var.clamp_min(1e-12) * x.shape[0])


@pytest.mark.slow
@pytest.mark.parametrize("schedule_name", sorted(SCHEDULES))
@pytest.mark.parametrize("space_name", sorted(SPACES))
def test_renoise_sampler_is_the_loop_of_method_section_4(space_name, schedule_name):
    schedule = build_schedule({"name": schedule_name}, "arctan")
    space = SPACES[space_name](VOCAB, schedule)
    x0 = VOCAB[TOKENS].unsqueeze(0)
    steps = STEPS if space_name == "gaussian" else 40  # the vocabulary spaces: the naive loop holds [n, L, V]
    sampler = build_sampler("renoise", steps=steps)
    grid = sampler.timesteps()
    inputs = []
    out = sampler.sample(
        space, oracle(x0), SAMPLES, len(TOKENS), torch.Generator().manual_seed(1), callback=lambda k, t, x, e0: inputs.append(x)
    )
    assert len(inputs) == steps
    assert torch.equal(out, x0.expand(SAMPLES, -1, -1))
    if space_name == "gaussian":  # the model input is the state: x_k ~ mu(t_k) x0 + s(t_k) eps exactly
        for k, x in enumerate(inputs):
            mu, std = marginal(schedule, grid, k)
            assert_marginal(x, mu * x0[0], std, 0.0, f"renoise/{schedule_name} k={k}")
        return
    expected = naive_renoise_inputs(space, x0, grid, torch.Generator().manual_seed(2))
    for k, (x, reference) in enumerate(zip(inputs, expected, strict=True)):
        # Two independent samples of the same law: the difference of means within 5 joint standard errors.
        joint_se = ((x.var(0) + reference.var(0)) / SAMPLES).sqrt()
        assert torch.all((x.mean(0) - reference.mean(0)).abs() <= SE_LIMIT * joint_se + 1e-6), f"{space_name} k={k}"
        std_se = (std_variance(x) + std_variance(reference)).sqrt()
        assert torch.all((x.std(0) - reference.std(0)).abs() <= SE_LIMIT * std_se + 1e-6), f"{space_name} k={k}"
