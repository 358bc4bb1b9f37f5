import math

import pytest
import torch

from rtdmd.functional.flow import score_from_velocity
from rtdmd.worlds.gmm.mixture import Mixture, energy_distance


def reference_log_prob(mix: Mixture, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """log p_sigma(x) with torch.distributions (an independent implementation)."""
    eye = torch.eye(mix.dim, dtype=torch.float64)
    comps = [torch.distributions.MultivariateNormal((1 - sigma) * m, (1 - sigma) ** 2 * c + sigma**2 * eye)
             for m, c in zip(mix.means, mix.covs)]
    logs = torch.stack([torch.log(w) + d.log_prob(x) for w, d in zip(mix.weights, comps)], 1)
    return torch.logsumexp(logs, 1)


@pytest.fixture
def mixture():
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.5, -0.2], [-0.2, 0.4]], [[0.1, 0.0], [0.0, 0.1]]])
    return Mixture.create([0.2, 0.5, 0.3], [[-2.0, 0.5], [1.5, 0.0], [0.0, 2.0]], covs)


@pytest.mark.parametrize("sigma", [0.0, 0.3, 0.8])
def test_log_prob_matches_torch_distributions(mixture, sigma):
    x = torch.randn(50, 2, dtype=torch.float64) * 2
    torch.testing.assert_close(mixture.log_prob(x, sigma), reference_log_prob(mixture, x, sigma))


@pytest.mark.parametrize("sigma", [0.1, 0.5, 0.9])
def test_velocity_agrees_with_autograd_score(mixture, sigma):
    # v = -(sigma * score + x) / (1 - sigma): check the closed-form velocity against the autograd score.
    x = (torch.randn(40, 2, dtype=torch.float64) * 2).requires_grad_()
    (score,) = torch.autograd.grad(reference_log_prob(mixture, x, sigma).sum(), x)
    s = torch.full((40,), sigma, dtype=torch.float64)
    v = mixture.velocity(x.detach(), s)
    # velocity -> score divides by sigma: allow float64 round-off amplified by 1/sigma
    torch.testing.assert_close(score_from_velocity(x.detach(), sigma, v), score, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mixture.score(x.detach(), s), score)


def test_velocity_is_the_conditional_expectation(mixture):
    # Monte Carlo: regress eps - x0 on x near a point; closed form must match the local average.
    gen = torch.Generator().manual_seed(0)
    x0, _ = mixture.sample(400_000, gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    sigma = 0.5
    x = (1 - sigma) * x0 + sigma * eps
    point = torch.tensor([0.5, 0.5], dtype=torch.float64)
    near = (x - point).norm(dim=1) < 0.08
    mc = (eps - x0)[near].mean(0)
    exact = mixture.velocity(point[None], torch.tensor([sigma], dtype=torch.float64))[0]
    assert near.sum() > 1000
    torch.testing.assert_close(mc, exact, atol=0.08, rtol=0)


def test_linear_tilt_matches_importance_weights(mixture):
    # Closed-form tilt vs self-normalised importance weighting of exact samples.
    gen = torch.Generator().manual_seed(1)
    w, beta = torch.tensor([0.5, -1.0], dtype=torch.float64), 1.5
    tilted = mixture.tilt_linear(w, beta)
    x, labels = mixture.sample(400_000, gen)
    iw = torch.softmax(x @ w / beta, 0)
    torch.testing.assert_close((iw[:, None] * x).sum(0), (tilted.weights[:, None] * tilted.means).sum(0), atol=0.01, rtol=0)
    frac = torch.stack([iw[labels == k].sum() for k in range(3)])
    torch.testing.assert_close(frac, tilted.weights, atol=0.01, rtol=0)


def test_quadratic_tilt_matches_importance_weights(mixture):
    gen = torch.Generator().manual_seed(2)
    center, a, beta = torch.tensor([0.5, 1.0], dtype=torch.float64), 0.8 * torch.eye(2, dtype=torch.float64), 0.5
    tilted = mixture.tilt_quadratic(center, a, beta)
    x, labels = mixture.sample(400_000, gen)
    r = -0.5 * (((x - center) @ a) * (x - center)).sum(1)
    iw = torch.softmax(r / beta, 0)
    torch.testing.assert_close((iw[:, None] * x).sum(0), (tilted.weights[:, None] * tilted.means).sum(0), atol=0.01, rtol=0)
    frac = torch.stack([iw[labels == k].sum() for k in range(3)])
    torch.testing.assert_close(frac, tilted.weights, atol=0.01, rtol=0)
    # the tilted law's density is proportional to p0 * exp(r / beta)
    grid = torch.randn(20, 2, dtype=torch.float64)
    lhs = tilted.log_prob(grid)
    rhs = mixture.log_prob(grid) - 0.5 * (((grid - center) @ a) * (grid - center)).sum(1) / beta
    diff = lhs - rhs
    torch.testing.assert_close(diff, diff[:1].expand_as(diff))


def test_energy_distance():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 2, generator=gen)
    y = torch.randn(2000, 2, generator=gen)
    z = torch.randn(2000, 2, generator=gen) + torch.tensor([1.0, 0.0])
    assert abs(energy_distance(x, y)) < 0.01
    # 1-D closed form for a mean shift of the first coordinate is positive and much larger than the floor
    assert energy_distance(x, z) > 0.2
    assert math.isclose(energy_distance(x, z), energy_distance(z, x), rel_tol=1e-9)
