import math

import pytest
import torch

from rtdmd.functional import flow, samplers
from tests.functional.test_flow import gaussian_velocity


@pytest.mark.parametrize("eta", [0.0, 0.3, 0.9, 1.0])
def test_cps_mean_and_std_follow_the_definition(eta):
    x, v, z = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    a, b = 0.75, 0.5
    theta = eta * math.pi / 2
    x0_hat, eps_hat = x - a * v, x + (1 - a) * v
    expected = (1 - b) * x0_hat + b * math.cos(theta) * eps_hat + b * math.sin(theta) * z
    torch.testing.assert_close(samplers.cps_step(x, v, a, b, eta, z), expected)


def test_eta0_is_the_euler_step_and_level0_gives_x0_hat():
    x, v = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(samplers.cps_step(x, v, 0.9, 0.75, 0.0, None), x + (0.75 - 0.9) * v)  # Euler
    torch.testing.assert_close(samplers.cps_step(x, v, 0.5, 0.0, 0.9, None), flow.x0_from_velocity(x, 0.5, v))


def test_stochastic_step_without_noise_is_an_error():
    with pytest.raises(ValueError, match="needs noise"):
        samplers.cps_step(torch.zeros(1, 2), torch.zeros(1, 2), 0.9, 0.5, 0.9, None)


@pytest.mark.parametrize("eta", [0.0, 0.5, 0.9])
def test_cps_maps_point_mass_marginal_at_a_onto_marginal_at_b(eta):
    # Data = point mass at c; exact velocity v(x, a) = (x - c) / a. After one step from a to b the sample
    # must be distributed as (1 - b) c + b * N(0, I), for every eta.
    n, d, a, b = 200_000, 3, 0.9, 0.4
    c = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    x = (1 - a) * c + a * torch.randn(n, d, dtype=torch.float64)
    v = (x - c) / a
    x_next = samplers.cps_step(x, v, a, b, eta, torch.randn(n, d, dtype=torch.float64))
    resid = (x_next - (1 - b) * c) / b
    torch.testing.assert_close(resid.mean(0), torch.zeros(d, dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(resid.T), torch.eye(d, dtype=torch.float64), atol=0.015, rtol=0)


def test_many_deterministic_steps_with_exact_velocity_converge_to_gaussian_data():
    m, var = 0.7, 0.3
    sigmas = torch.linspace(1, 0, 501)
    x = torch.randn(100_000, dtype=torch.float64)
    out = samplers.rollout(lambda x, s, _: gaussian_velocity(x, s[0].item(), m, var), x, sigmas, 0.0)
    assert out.mean().item() == pytest.approx(m, abs=0.01)
    assert out.var().item() == pytest.approx(var, rel=0.02)


def test_stochastic_cps_with_exact_velocity_loses_variance():
    # Spec section 3: 2000 CPS steps at eta = 0.9 with the exact velocity of N(0.7, 0.3) end with var ~0.171.
    m, var = 0.7, 0.3
    sigmas = torch.linspace(1, 0, 2001)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40_000, generator=gen, dtype=torch.float64)
    out = samplers.rollout(lambda x, s, _: gaussian_velocity(x, s[0].item(), m, var), x, sigmas, 0.9,
                              lambda i: torch.randn(40_000, generator=gen, dtype=torch.float64))
    assert out.var().item() == pytest.approx(0.171, abs=0.01)


def test_gaussian_log_prob_matches_torch_distributions():
    mean, x_next = torch.randn(5, 2, 3), torch.randn(5, 2, 3)
    std = torch.rand(5) + 0.1
    expected = torch.distributions.Normal(mean, std.reshape(5, 1, 1)).log_prob(x_next).flatten(1).sum(1)
    got = samplers.gaussian_log_prob(x_next, mean, std.reshape(5, 1, 1))
    torch.testing.assert_close(got, expected)
    scalar = samplers.gaussian_log_prob(x_next, mean, 0.4)
    torch.testing.assert_close(scalar, torch.distributions.Normal(mean, 0.4).log_prob(x_next).flatten(1).sum(1))


def test_simplified_log_prob_gradient_is_exact_times_two_rho2_over_d():
    x_next = torch.randn(3, 4, 5)
    mean = torch.randn(3, 4, 5, requires_grad=True)
    rho, dim = 0.37, 20
    (g_exact,) = torch.autograd.grad(samplers.gaussian_log_prob(x_next, mean, rho).sum(), mean)
    (g_simple,) = torch.autograd.grad(samplers.simplified_log_prob(x_next, mean).sum(), mean)
    torch.testing.assert_close(g_simple, g_exact * 2 * rho**2 / dim)
