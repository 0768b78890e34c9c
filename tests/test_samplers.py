"""Every sampler step against numbers worked by hand from METHOD section 4, on a tiny V."""

import math

import pytest
import torch

from smoothie_pl.diffusion import (
    CosineSchedule,
    DDIMSampler,
    DDPMSampler,
    RenoiseSampler,
    SDESampler,
    SdSchedule,
    TessSchedule,
    build_sampler,
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


def test_ddim_step():
    (mu, std), (mu_n, std_n) = sd(0.5), sd(0.25)
    expected = by_element(lambda x, x0: mu_n * x0 + std_n * (x - mu * x0) / std)
    assert torch.allclose(DDIMSampler().step(SdSchedule(), STATE, CLEAN, T, T_NEXT, None), expected, rtol=1e-10)


def test_ddim_step_keeps_an_exact_marginal_on_its_path():
    """If x_t = mu x0 + s eps and the prediction is x0, DDIM lands on mu' x0 + s' eps."""
    eps = torch.randn(STATE.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (mu, std), (mu_n, std_n) = sd(0.5), sd(0.25)
    step = DDIMSampler().step(SdSchedule(), mu * CLEAN + std * eps, CLEAN, T, T_NEXT, None)
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
        SdSchedule(), STATE, CLEAN, T, T_NEXT, torch.Generator().manual_seed(1)
    )
    assert torch.allclose(step, expected, rtol=1e-10)


def test_ddpm_variance_for_a_scaled_prior():
    """TESS's noise is K times larger: the posterior variance scales with K^2, the mean does not."""
    generator = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    tess = DDPMSampler().step(TessSchedule(scale=5.0), STATE, CLEAN, T, T_NEXT, generator())
    unit = DDPMSampler().step(TessSchedule(scale=1.0), STATE, CLEAN, T, T_NEXT, generator())
    mean = DDPMSampler(noise_scale=0.0).step(TessSchedule(scale=1.0), STATE, CLEAN, T, T_NEXT, None)
    assert torch.allclose(tess - mean, 5 * (unit - mean), rtol=1e-10)


@pytest.mark.parametrize("noise_scale", [1.0, 0.0])
def test_sde_euler_maruyama_step(noise_scale):
    """VP SDE with linear beta (cosine schedule): beta(0.5) = 0.1 + 0.5 * 19.9."""
    t, h = 0.5, 0.25
    beta = 0.1 + t * 19.9
    log_mean = -0.25 * t**2 * 19.9 - 0.5 * t * 0.1
    mu, var = math.exp(log_mean), 1 - math.exp(2 * log_mean)
    z = torch.randn(STATE.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    drift = by_element(lambda x, x0: beta * (x / 2 - (x - mu * x0) / var))
    expected = STATE + h * drift + noise_scale * math.sqrt(beta * h) * z
    step = SDESampler(noise_scale=noise_scale).step(
        CosineSchedule(), STATE, CLEAN, T, T_NEXT, torch.Generator().manual_seed(3)
    )
    assert torch.allclose(step, expected, rtol=1e-10)


def test_sde_step_with_a_scaled_prior():
    """TESS, K = 5: drift beta (x/2 + K^2 score), diffusion K sqrt(beta h); beta = pi tan(a) / (1 + s)."""
    t, h, s, k = 0.5, 0.25, 1e-4, 5.0
    angle = lambda u: (u + s) / (1 + s) * math.pi / 2  # noqa: E731
    mu = math.cos(angle(t)) / math.cos(angle(0.0))
    var = k**2 * (1 - mu**2)
    beta = math.pi * math.tan(angle(t)) / (1 + s)
    z = torch.randn(STATE.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    drift = by_element(lambda x, x0: beta * (x / 2 - k**2 * (x - mu * x0) / var))
    expected = STATE + h * drift + k * math.sqrt(beta * h) * z
    step = SDESampler().step(TessSchedule(), STATE, CLEAN, T, T_NEXT, torch.Generator().manual_seed(4))
    assert torch.allclose(step, expected, rtol=1e-10)


class RecordingSpace:
    """A space whose state is the model input; records what the sampler asks of it."""

    def __init__(self):
        self.schedule = SdSchedule()
        self.renoised_at = []

    def prior_input(self, batch, length, generator):
        return torch.zeros(batch, length, 2)

    def prior_state(self, batch, length, generator):
        return torch.ones(batch, length, 2)

    def renoise_input(self, predicted, t, generator, noise_scale):
        self.renoised_at.append(round(t[0].item(), 6))
        return predicted

    def clean_state(self, predicted):
        return predicted

    def state_input(self, state):
        return state


@pytest.mark.parametrize("name", ["renoise", "ddim", "ddpm", "sde"])
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


def test_unknown_sampler_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        build_sampler("euler")
    with pytest.raises(ValueError, match="steps"):
        RenoiseSampler(steps=0)
    with pytest.raises(ValueError, match="noise_scale"):
        DDIMSampler(noise_scale=-1.0)
