"""Every sampler step against numbers worked by hand from METHOD section 4, on a tiny V."""

import math

import pytest
import torch

from smoothie_pl.diffusion.samplers import PowerGrid
from smoothie_pl.options import SamplingConfig

from smoothie_pl.diffusion import (
    SAMPLERS,
    CosineSchedule,
    DDIMSampler,
    DDPMSampler,
    RenoiseSampler,
    Sampler,
    SDESampler,
    SdSchedule,
    TessSchedule,
    TimeGrid,
    UniformGrid,
    build_sampler,
    build_time_grid,
)

STATE = torch.tensor([[[0.3, -1.2, 2.0], [1.5, 0.1, -0.4]]], dtype=torch.float64)  # [B=1, L=2, V=3]
CLEAN = torch.tensor([[[-2.0, -0.5, 0.0], [0.0, -3.0, -1.0]]], dtype=torch.float64)
T, T_NEXT = torch.tensor([0.5], dtype=torch.float64), torch.tensor([0.25], dtype=torch.float64)


def sd(t, k=9.0):
    """mu and std of the sd schedule, by hand."""
    mu = 1 / math.sqrt(1 + k**2 * math.tan(math.pi * t / 2) ** 2)
    return mu, math.sqrt(1 - mu**2)


def by_element(function):
    """Apply a scalar formula to every (state, clean) element pair."""
    values = [function(x, x0) for x, x0 in zip(STATE.flatten().tolist(), CLEAN.flatten().tolist())]
    return torch.tensor(values, dtype=torch.float64).view(STATE.shape)


class HandSpace:
    """The state samplers' view of a space whose state is its own clean state (float64 kept)."""

    def __init__(self, schedule):
        self.schedule = schedule

    def clean_state(self, predicted):
        return predicted


def test_ddim_step():
    (mu, std), (mu_n, std_n) = sd(0.5), sd(0.25)
    expected = by_element(lambda x, x0: mu_n * x0 + std_n * (x - mu * x0) / std)
    step = DDIMSampler().step(HandSpace(SdSchedule()), STATE, CLEAN, T, T_NEXT, None)
    assert torch.allclose(step, expected, rtol=1e-10)


def test_ddim_step_keeps_an_exact_marginal_on_its_path():
    """If x_t = mu x0 + s eps and the prediction is x0, DDIM lands on mu' x0 + s' eps."""
    eps = torch.randn(STATE.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (mu, std), (mu_n, std_n) = sd(0.5), sd(0.25)
    step = DDIMSampler().step(HandSpace(SdSchedule()), mu * CLEAN + std * eps, CLEAN, T, T_NEXT, None)
    assert torch.allclose(step, mu_n * CLEAN + std_n * eps, rtol=1e-10)


@pytest.mark.parametrize("noise_scale", [1.0, 0.5, 0.0])
def test_ddpm_posterior_step(noise_scale):
    (mu, _), (mu_n, std_n) = sd(0.5), sd(0.25)
    abar, abar_n = mu**2, mu_n**2
    alpha = abar / abar_n
    z = torch.randn(STATE.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mean = by_element(
        lambda x, x0: (math.sqrt(alpha) * (1 - abar_n) * x + math.sqrt(abar_n) * (1 - alpha) * x0) / (1 - abar)
    )
    expected = mean + noise_scale * std_n * math.sqrt((1 - alpha) / (1 - abar)) * z
    step = DDPMSampler(noise_scale=noise_scale).step(
        HandSpace(SdSchedule()), STATE, CLEAN, T, T_NEXT, torch.Generator().manual_seed(1)
    )
    assert torch.allclose(step, expected, rtol=1e-10)


def test_ddpm_variance_for_a_scaled_prior():
    """TESS's noise is K times larger: the posterior variance scales with K^2, the mean does not."""
    generator = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    tess = DDPMSampler().step(HandSpace(TessSchedule(scale=5.0)), STATE, CLEAN, T, T_NEXT, generator())
    unit = DDPMSampler().step(HandSpace(TessSchedule(scale=1.0)), STATE, CLEAN, T, T_NEXT, generator())
    mean = DDPMSampler(noise_scale=0.0).step(HandSpace(TessSchedule(scale=1.0)), STATE, CLEAN, T, T_NEXT, None)
    assert torch.allclose(tess - mean, 5 * (unit - mean), rtol=1e-10)


def cosine_clock(t, beta_0=0.1, beta_1=20.0):
    """rho = -2 log mu = t^2 (beta_1 - beta_0) / 2 + t beta_0 for the linear-beta schedule."""
    return 0.5 * t**2 * (beta_1 - beta_0) + t * beta_0


def euler_maruyama(x, x0, rho, h, z, c=1.0):
    """One reverse step of the VP SDE on the clock rho: x + h (x / 2 - (x - mu x0) / v) + c sqrt(h) z."""
    mu = math.exp(-rho / 2)
    var = 1 - mu**2
    return x + h * (x / 2 - (x - mu * x0) / var) + c * math.sqrt(h) * z


@pytest.mark.parametrize("noise_scale", [1.0, 0.0])
def test_sde_euler_maruyama_step(noise_scale):
    """One sub-step spans the whole grid step (a huge max_substep): h = rho(0.5) - rho(0.25)."""
    start, end = cosine_clock(0.5), cosine_clock(0.25)
    z = torch.randn(STATE.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    noisy = [
        euler_maruyama(x, x0, start, start - end, noise_scale * n)
        for x, x0, n in zip(STATE.flatten().tolist(), CLEAN.flatten().tolist(), z.flatten().tolist())
    ]
    step = SDESampler(noise_scale=noise_scale, max_substep=1e9).step(
        HandSpace(CosineSchedule()), STATE, CLEAN, T, T_NEXT, torch.Generator().manual_seed(3)
    )
    assert torch.allclose(step, torch.tensor(noisy, dtype=torch.float64).view(STATE.shape), rtol=1e-9)


def test_sde_cuts_a_long_step_into_substeps_of_the_variance_scale():
    """max_substep chosen so that exactly two sub-steps of h = span / 2 are needed; the noise is drawn per sub-step."""
    start, end = cosine_clock(0.5), cosine_clock(0.25)
    span, variance_at_end = start - end, 1 - math.exp(-end)
    max_substep = 0.75 * span / variance_at_end  # span / (max_substep * v) = 1.33 -> 2 sub-steps
    generator = torch.Generator().manual_seed(5)
    z1 = torch.randn(STATE.shape, dtype=torch.float64, generator=generator).flatten().tolist()
    z2 = torch.randn(STATE.shape, dtype=torch.float64, generator=generator).flatten().tolist()
    h = span / 2
    expected = []
    for x, x0, n1, n2 in zip(STATE.flatten().tolist(), CLEAN.flatten().tolist(), z1, z2):
        expected.append(euler_maruyama(euler_maruyama(x, x0, start, h, n1), x0, start - h, h, n2))
    step = SDESampler(max_substep=max_substep).step(
        HandSpace(CosineSchedule()), STATE, CLEAN, T, T_NEXT, torch.Generator().manual_seed(5)
    )
    assert torch.allclose(step, torch.tensor(expected, dtype=torch.float64).view(STATE.shape), rtol=1e-9)


def test_sde_step_with_a_scaled_prior():
    """TESS, K = 5: the score is -(x - mu x0) / (K^2 v), the diffusion K sqrt(h); rho = -2 log mu by hand."""
    s, k = 1e-4, 5.0
    angle = lambda u: (u + s) / (1 + s) * math.pi / 2  # noqa: E731
    clock = lambda u: -2 * math.log(math.cos(angle(u)) / math.cos(angle(0.0)))  # noqa: E731
    start, end = clock(0.5), clock(0.25)
    z = torch.randn(STATE.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    expected = [
        euler_maruyama(x, x0, start, start - end, n, c=k)
        for x, x0, n in zip(STATE.flatten().tolist(), CLEAN.flatten().tolist(), z.flatten().tolist())
    ]
    step = SDESampler(max_substep=1e9).step(
        HandSpace(TessSchedule()), STATE, CLEAN, T, T_NEXT, torch.Generator().manual_seed(4)
    )
    assert torch.allclose(step, torch.tensor(expected, dtype=torch.float64).view(STATE.shape), rtol=1e-9)


class RecordingSpace:
    """A space whose state is the model input; records what the sampler asks of it."""

    def __init__(self):
        self.schedule = SdSchedule()
        self.renoised_at = []

    def prior_input(self, batch, length, generator, live=None):
        return torch.zeros(batch, length, 2)

    def prior_state(self, batch, length, generator):
        return torch.ones(batch, length, 2)

    def renoise_input(self, predicted, t, generator, noise_scale, live=None):
        self.renoised_at.append(round(t[0].item(), 6))
        return predicted

    def clean_state(self, predicted):
        return predicted

    def state_input(self, state):
        return state


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_the_model_on_the_grid_and_returns_its_last_prediction(name):
    space, seen = RecordingSpace(), []

    def denoise(x, t):
        seen.append(round(t[0].item(), 6))
        return torch.full_like(x, float(len(seen)))

    out = build_sampler(name, steps=4).sample(space, denoise, batch=3, length=5)
    assert seen == [1.0, 0.75, 0.5, 0.25]
    assert out.shape == (3, 5, 2) and torch.all(out == 4.0)
    if name == "renoise":
        assert space.renoised_at == [0.75, 0.5, 0.25]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_contract_one_step_the_shared_loop_and_a_callback_at_every_step(name):
    """Each sampler defines ``step`` and inherits the one loop; the callback gets (k, t, x, e0) of every evaluation."""
    cls = SAMPLERS[name]
    assert "sample" not in vars(cls) and cls.sample is Sampler.sample
    assert cls.step is not Sampler.step
    space, evaluations, calls = RecordingSpace(), [], []

    def denoise(x, t):
        prediction = x + 1.0
        evaluations.append((t.clone(), x.clone(), prediction))
        return prediction

    def callback(k, t, x, e0):
        calls.append((k, t.clone(), x.clone(), e0))

    build_sampler(name, steps=5).sample(space, denoise, batch=2, length=3, callback=callback)
    assert [k for k, *_ in calls] == [0, 1, 2, 3, 4]
    for (k, t, x, e0), (t_seen, x_seen, prediction) in zip(calls, evaluations, strict=True):
        assert t.shape == (2,) and torch.allclose(t, torch.full((2,), 1 - k / 5))
        assert torch.equal(x, x_seen) and e0 is prediction


def test_a_registered_time_grid_is_the_one_the_loop_walks():
    class Quadratic(TimeGrid):
        name = "quadratic"

        def __call__(self, steps, device=None):
            return (1 - torch.arange(steps + 1, dtype=torch.float32, device=device) / steps) ** 2

    seen = []
    sampler = RenoiseSampler(steps=4, grid=Quadratic())
    sampler.sample(RecordingSpace(), lambda x, t: seen.append(t[0].item()) or x, batch=1, length=1)
    assert seen == pytest.approx([1.0, 0.5625, 0.25, 0.0625])
    assert isinstance(build_time_grid("uniform"), UniformGrid)
    with pytest.raises(ValueError, match="unknown time grid 'cubic'"):
        build_time_grid("cubic")


def test_power_grid_bends_the_uniform_grid_towards_small_t():
    seen = []
    sampler = RenoiseSampler(steps=5, grid=build_time_grid("power", power=3.0))
    sampler.sample(RecordingSpace(), lambda x, t: seen.append(t[0].item()) or x, batch=1, length=1)
    # (1 - k/5)^3 for k = 0..4, worked by hand.
    assert seen == pytest.approx([1.0, 0.512, 0.216, 0.064, 0.008])
    assert torch.equal(PowerGrid(1.0)(7), UniformGrid()(7))
    with pytest.raises(ValueError, match="power must be positive"):
        PowerGrid(0.0)


def test_sampling_config_grid_power_builds_the_power_grid():
    assert SamplingConfig(grid_power=2.0).build_sampler().timesteps().tolist() == pytest.approx(
        [(1 - k / 200) ** 2 for k in range(201)], rel=1e-5, abs=1e-8
    )
    assert isinstance(SamplingConfig().build_sampler().grid, UniformGrid)  # the paper's default


def test_unknown_sampler_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        build_sampler("euler")
    with pytest.raises(ValueError, match="steps"):
        RenoiseSampler(steps=0)
    with pytest.raises(ValueError, match="noise_scale"):
        DDIMSampler(noise_scale=-1.0)
    with pytest.raises(ValueError, match="max_substep"):
        SDESampler(max_substep=0.0)
