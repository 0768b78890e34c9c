import math

import pytest
import torch

from smoothie_pl.diffusion import ArctanSchedule


def by_hand(t: float, sigma_min=1.5, sigma_max=200.0, k=9.0, delta=1.0) -> tuple[float, float]:
    """METHOD section 3 written out with the math module, independently of the library."""
    t = min(max(t, 5e-4), 0.9995)
    sigma_bar = 1 + (sigma_max / sigma_min - 1) * (2 / math.pi) * math.atan(math.sqrt(t / (1 - t)) / k)
    return sigma_bar**-2, delta * math.sqrt(1 - sigma_bar**-4)


def test_published_reference_values():
    mu, std = ArctanSchedule().marginal(torch.tensor([0.05, 0.5, 1.0]))
    assert mu[0].item() == pytest.approx(0.101, abs=5e-4)
    assert std[0].item() == pytest.approx(0.995, abs=5e-4)
    assert mu[1].item() == pytest.approx(0.00939, abs=5e-6)
    assert mu[2].item() == pytest.approx(7.4e-5, abs=5e-7)


@pytest.mark.parametrize("params", [{}, {"sigma_max": 50.0, "k": 3.0, "delta": 0.5}])
def test_matches_formula_worked_by_hand(params):
    times = [0.0, 1e-4, 0.01, 0.2, 0.37, 0.8, 0.999, 1.0]
    mu, std = ArctanSchedule(**params).marginal(torch.tensor(times, dtype=torch.float64))
    for i, t in enumerate(times):
        expected_mu, expected_std = by_hand(t, **params)
        assert mu[i].item() == pytest.approx(expected_mu, rel=1e-12)
        assert std[i].item() == pytest.approx(expected_std, rel=1e-12)


def test_marginal_keeps_the_shape_of_t_and_is_monotone():
    t = torch.linspace(0, 1, 101).view(101, 1)
    mu, std = ArctanSchedule().marginal(t)
    assert mu.shape == std.shape == t.shape
    assert torch.all(mu[1:] <= mu[:-1]) and torch.all(std[1:] >= std[:-1])


@pytest.mark.parametrize("params", [{"sigma_max": 1.0}, {"sigma_min": 0.0}, {"k": 0.0}, {"delta": -1.0}])
def test_impossible_parameters_are_refused(params):
    with pytest.raises(ValueError, match="ArctanSchedule"):
        ArctanSchedule(**params)


# ---------------------------------------------------------------- the other schedules
# Each by-hand function is METHOD section 5's formula written with the math
# module; times are clamped to [5e-4, 0.9995] like every schedule's.
from smoothie_pl.diffusion import (  # noqa: E402
    SCHEDULES,
    CosineSchedule,
    SdSchedule,
    SqrtSchedule,
    TessSchedule,
    build_schedule,
)


def clamp(t: float) -> float:
    return min(max(t, 5e-4), 0.9995)


def sd_by_hand(t, k=9.0):
    alpha = 1 / math.sqrt(1 + k**2 * math.tan(math.pi * clamp(t) / 2) ** 2)
    return alpha, math.sqrt(1 - alpha**2)


def tess_by_hand(t, scale=5.0):
    angle = lambda u: (u + 1e-4) / (1 + 1e-4) * math.pi / 2  # noqa: E731
    alpha_bar = math.cos(angle(clamp(t))) ** 2 / math.cos(angle(0.0)) ** 2
    return math.sqrt(alpha_bar), scale * math.sqrt(1 - alpha_bar)


def cosine_by_hand(t, beta_0=0.1, beta_1=20.0):
    t = clamp(t)
    log_mean = -0.25 * t**2 * (beta_1 - beta_0) - 0.5 * t * beta_0
    return math.exp(log_mean), math.sqrt(1 - math.exp(2 * log_mean))


def sqrt_by_hand(t):
    alpha = 1 - math.sqrt(clamp(t) + 1e-4)
    return math.sqrt(alpha), math.sqrt(1 - alpha)


CASES = [
    (SdSchedule(), sd_by_hand, {}),
    (SdSchedule(k=3.0), sd_by_hand, {"k": 3.0}),
    (TessSchedule(), tess_by_hand, {}),
    (TessSchedule(scale=2.0), tess_by_hand, {"scale": 2.0}),
    (CosineSchedule(), cosine_by_hand, {}),
    (CosineSchedule(beta_0=1.0, beta_1=5.0), cosine_by_hand, {"beta_0": 1.0, "beta_1": 5.0}),
    (SqrtSchedule(), sqrt_by_hand, {}),
]


@pytest.mark.parametrize("schedule, by_hand_formula, params", CASES)
def test_other_schedules_match_their_formulas(schedule, by_hand_formula, params):
    times = [0.0, 1e-4, 0.01, 0.2, 0.5, 0.8, 0.999, 1.0]
    mu, std = schedule.marginal(torch.tensor(times, dtype=torch.float64))
    for i, t in enumerate(times):
        expected_mu, expected_std = by_hand_formula(t, **params)
        assert mu[i].item() == pytest.approx(expected_mu, rel=1e-10)
        assert std[i].item() == pytest.approx(expected_std, rel=1e-10, abs=1e-12)


def test_golden_numbers():
    """A few values worked on paper, as a check on the by-hand functions themselves."""
    # sd, t = 0.5: tan(pi/4) = 1, alpha = 1/sqrt(82).
    mu, std = SdSchedule().marginal(torch.tensor([0.5], dtype=torch.float64))
    assert mu.item() == pytest.approx(82**-0.5) and std.item() == pytest.approx(math.sqrt(81 / 82))
    # cosine (linear beta 0.1 -> 20), t = 0.5: log mean = -0.25 * 0.25 * 19.9 - 0.025 = -1.26875.
    mu, _ = CosineSchedule().marginal(torch.tensor([0.5], dtype=torch.float64))
    assert mu.item() == pytest.approx(math.exp(-1.26875))
    # sqrt, t = 0.2499: alpha = 1 - sqrt(0.25) = 0.5.
    mu, std = SqrtSchedule().marginal(torch.tensor([0.2499], dtype=torch.float64))
    assert mu.item() == pytest.approx(0.5**0.5) and std.item() == pytest.approx(0.5**0.5)
    # tess: starts at mu = 1 (alpha_bar divided by its value at 0), prior std K = 5.
    mu, std = TessSchedule().marginal(torch.tensor([0.0], dtype=torch.float64))
    assert mu.item() == pytest.approx(1.0, abs=1e-6) and TessSchedule().prior_std == 5.0


def test_prior_stds():
    assert [SCHEDULES[name]().prior_std for name in ("arctan", "sd", "tess", "cosine", "sqrt")] == [1, 1, 5, 1, 1]
    assert ArctanSchedule(delta=0.5).prior_std == 0.5 and TessSchedule(scale=3.0).prior_std == 3.0


def test_cosine_beta_is_the_linear_beta():
    times = torch.tensor([0.01, 0.3, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(CosineSchedule().beta(times), 0.1 + times * 19.9, rtol=1e-10)


@pytest.mark.parametrize(
    "schedule, by_hand_formula, params",
    [(ArctanSchedule(), by_hand, {}), *CASES],
)
def test_beta_is_minus_twice_the_log_slope_of_mu(schedule, by_hand_formula, params):
    """beta = -2 d log mu / dt, against a central difference of the by-hand mu."""
    h = 1e-6
    for t in (0.05, 0.3, 0.6, 0.9):
        log_mu = lambda u: math.log(by_hand_formula(u, **params)[0])  # noqa: E731
        slope = (log_mu(t + h) - log_mu(t - h)) / (2 * h)
        beta = schedule.beta(torch.tensor([t], dtype=torch.float64)).item()
        assert beta == pytest.approx(-2 * slope, rel=1e-5)


def test_tess_beta_worked_by_hand():
    # mu = cos(a(t)) / cos(a(0)), a(t) = (t + s) / (1 + s) pi / 2, so beta = pi tan(a(t)) / (1 + s).
    t, s = 0.4, 1e-4
    expected = math.pi * math.tan((t + s) / (1 + s) * math.pi / 2) / (1 + s)
    assert TessSchedule().beta(torch.tensor([t], dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-10)


def test_build_schedule_by_name_or_the_default_with_parameters():
    assert build_schedule({"name": "sd", "k": 3.0}, "arctan") == SdSchedule(k=3.0)
    assert build_schedule(None, "tess") == TessSchedule()
    # Without a name, the parameters adjust the default schedule.
    assert build_schedule({"sigma_max": 100.0}, "arctan") == ArctanSchedule(sigma_max=100.0)
    assert build_schedule(SqrtSchedule(), "arctan") == SqrtSchedule()
    assert SdSchedule(k=3.0).to_dict() == {"name": "sd", "k": 3.0}


@pytest.mark.parametrize(
    "spec, message",
    [({"name": "linear"}, "unknown schedule 'linear'"), ({"name": "sd", "sigma_max": 3}, "schedule 'sd'")],
)
def test_bad_schedule_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        build_schedule(spec, "arctan")
