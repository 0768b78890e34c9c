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
