"""The loss objects of both stages against closed forms: the exact preset's data-level DM term (with and without
the deconvolution of its level-t shrinkage), the renoising levels at extreme generator levels, and the one-line
refusal of a schedule with no room to renoise."""

import pytest
import torch

from rtdmd.errors import UserError
from rtdmd.functional import dmd
from rtdmd.rng import Draw, Streams
from rtdmd.train import objectives
from rtdmd.worlds.gmm.mixture import Mixture

# Two Gaussians of one correlated covariance: the generator's law and the teacher's (spec section 10 velocities).
COV = torch.tensor([[0.05, 0.02], [0.02, 0.03]], dtype=torch.float64)
MEAN_F, MEAN_T = torch.tensor([0.1, -0.05], dtype=torch.float64), torch.tensor([0.0, 0.0], dtype=torch.float64)


def velocity(mean):
    mixture = Mixture.create([1.0], mean[None], COV[None])
    return lambda x, sigma, cond: mixture.velocity(x.double(), sigma.double()).to(x.dtype)


def dm_gradient(t: float, deconvolution: int) -> torch.Tensor:
    """The gradient the ScoreDMLoss back-propagates into clean samples, at one level ``t``."""
    x = (0.2 * torch.randn(5, 2, dtype=torch.float64)).requires_grad_(True)
    loss = objectives.ScoreDMLoss(objectives.RenoiseLevels(sigma_range=(t, t + 1e-9)), deconvolution)
    draw = Draw(Streams(0), 0, list(range(5)), (2,), torch.device("cpu"), torch.float64)
    value, _ = loss(velocity(MEAN_T), velocity(MEAN_F), None, x, 0.0, draw)
    value.sum().backward()
    return x.grad.double()


@pytest.mark.parametrize("t", [0.05, 0.3])
def test_data_level_dm_term_against_the_closed_form(t):
    """For N(m, S) against N(mu, S): the data-level score difference is S^-1 (m - mu) at every sample; the level-t
    term gives ((1 - t)^2 S + t^2 I)^-1 (1 - t)^2 (m - mu), shrunk in each direction; the deconvolution (two CG
    iterations in 2-D) restores the data-level value exactly."""
    data_level = torch.linalg.solve(COV, MEAN_F - MEAN_T)
    shrunk = torch.linalg.solve(COV + t**2 / (1 - t) ** 2 * torch.eye(2, dtype=torch.float64), MEAN_F - MEAN_T)
    torch.testing.assert_close(dm_gradient(t, 0), shrunk.expand(5, 2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dm_gradient(t, 2), data_level.expand(5, 2), rtol=1e-5, atol=1e-5)


def test_conjugate_gradient_solves_per_sample_systems():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    spd = a @ a.transpose(1, 2) + 0.5 * torch.eye(4, dtype=torch.float64)
    b = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    y = dmd.conjugate_gradient(lambda u: (spd @ u[..., None])[..., 0], b, iters=4)
    torch.testing.assert_close(y, torch.linalg.solve(spd, b))


def test_renoising_never_lands_below_the_sub_interval():
    """FLUX.1 above ~1700 px puts its first generator level above 0.97: the clamp at 980 would give t <= s."""
    u = torch.rand(1000)
    for s in (0.0, 0.5, 0.975, 0.985):
        t = dmd.sample_renoise_level(u, s)
        assert bool((t >= s + 0.01 - 1e-6).all()) and bool((t < 1).all()), s
    assert dmd.sample_renoise_level(torch.tensor([0.99]), 0.5).item() == pytest.approx(0.98)  # the clamp still holds


def test_a_schedule_without_room_to_renoise_is_one_line():
    objectives.check_renoise_room(torch.tensor([1.0, 0.98, 0.5, 0.0]), 10.0)
    with pytest.raises(UserError, match="level 0.9950 .* leaves no room to renoise"):
        objectives.check_renoise_room(torch.tensor([1.0, 0.995, 0.5, 0.0]), 10.0)
