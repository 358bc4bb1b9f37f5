import math

import pytest
import torch

from rtdmd.functional import dmd, flow, samplers


@pytest.mark.parametrize("eta", [0.0, 0.9])
def test_kappa_identity_for_shared_noise_projections(eta):
    x_t, v1, v2, z = (torch.randn(6, 3, 4) for _ in range(4))
    s = torch.tensor([0.0, 0.2, 0.5, 0.75, 0.9, 0.3])
    t = torch.tensor([0.3, 0.4, 0.8, 0.95, 0.97, 0.9])
    diff = samplers.cps_step(x_t, v1, t, s, eta, z) - samplers.cps_step(x_t, v2, t, s, eta, z)
    # kappa(s, t) = s cos(theta) (1 - t) - (1 - s) t (spec 4.6); kappa = -t at s = 0
    k = s * math.cos(eta * math.pi / 2) * (1 - t) - (1 - s) * t
    torch.testing.assert_close(diff, k.reshape(6, 1, 1) * (v1 - v2))
    assert (k < 0).all()


def test_dmd_gradient_vanishes_when_fake_equals_teacher():
    x_s, x_t, v, z = (torch.randn(4, 3, 2, 2) for _ in range(4))
    g = dmd.dmd_gradient(x_s, x_t, v, v.clone(), torch.full((4,), 0.5), torch.full((4,), 0.8), 0.9, z)
    assert torch.count_nonzero(g) == 0


def test_dmd_gradient_at_s0_is_dmd2():
    # DMD2: grad = (x0_fake - x0_real) / mean|x - x0_real|, with x0 predictions from the velocities at x_t.
    x, x_t, v_real, v_fake = (torch.randn(5, 3, 4, 4) for _ in range(4))
    t = torch.rand(5) * 0.9 + 0.05
    x0_real = x_t - t.reshape(5, 1, 1, 1) * v_real
    x0_fake = x_t - t.reshape(5, 1, 1, 1) * v_fake
    expected = (x0_fake - x0_real) / (x - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(dmd.dmd_gradient(x, x_t, v_real, v_fake, 0.0, t, 0.9, None), expected)


def test_dmd_gradient_sets_nonfinite_to_zero():
    x_t, v_real, v_fake = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)
    x_real = x_t - 0.5 * v_real
    x = torch.stack([x_real[0], torch.randn(3)])  # sample 0 sits exactly on the teacher's projection
    g = dmd.dmd_gradient(x, x_t, v_real, v_fake, 0.0, 0.5, 0.0, None)
    assert torch.isfinite(g).all() and torch.count_nonzero(g[0]) == 0 and torch.count_nonzero(g[1]) == 3


def test_dmd_loss_gradient_is_g_over_numel():
    x = torch.randn(3, 2, 5, requires_grad=True)
    g = torch.randn(3, 2, 5)
    dmd.dmd_loss(x, g).mean().backward()
    torch.testing.assert_close(x.grad, g / x.numel())


def test_score_difference_gradient_matches_finite_difference_of_diffused_kl():
    # p_theta = N(theta, 1), p_T = N(0, 1) in 1-D: KL_t(theta) = ((1-t) theta)^2 / (2 ((1-t)^2 + t^2)).
    # The reparameterised estimator E[score-difference gradient at x_t] must equal dKL_t/dtheta.
    theta, t, n = 0.8, 0.3, 400_000
    c = (1 - t) ** 2 + t**2

    def velocity(x_t, mean):  # exact velocity of N(mean, 1) at level t
        resid = x_t - (1 - t) * mean
        return t / c * resid - (mean + (1 - t) / c * resid)

    x = theta + torch.randn(n, 1, dtype=torch.float64)
    x_t = flow.interpolate(x, torch.randn_like(x), t)
    g = dmd.score_difference_gradient(velocity(x_t, theta), velocity(x_t, 0.0), t)
    kl = lambda th: ((1 - t) * th) ** 2 / (2 * c)
    fd = (kl(theta + 1e-4) - kl(theta - 1e-4)) / 2e-4
    assert g.mean().item() == pytest.approx(fd, rel=0.01)


def test_surrogate_loss_backpropagates_g_unscaled():
    x = torch.randn(4, 3, requires_grad=True)
    g = torch.randn(4, 3)
    dmd.surrogate_loss(x, g).sum().backward()
    torch.testing.assert_close(x.grad, g)


def test_fake_score_weight():
    sigma_ts = torch.tensor([0.0, 0.1, 0.3, 0.5])
    torch.testing.assert_close(dmd.published_fake_weight(sigma_ts), torch.tensor([0.0, 0.1, 0.9, 1.0]))
    torch.testing.assert_close(dmd.uniform_fake_weight(sigma_ts), torch.ones(4))


def test_two_sample_consistency_is_unbiased_for_squared_bias():
    # h' = m + noise; E[L_c] = mean_d (m - h)^2 while the one-sample form adds Var h'.
    n, d = 200_000, 4
    h = torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64).expand(n, d)
    m = torch.tensor([0.4, 0.1, -0.2, 0.5], dtype=torch.float64)
    h1 = m + 0.7 * torch.randn(n, d, dtype=torch.float64)
    h2 = m + 0.7 * torch.randn(n, d, dtype=torch.float64)
    truth = ((m - h[0]) ** 2).mean().item()
    assert dmd.consistency_loss(h, h1, h2).mean().item() == pytest.approx(truth, abs=0.005)
    assert dmd.consistency_loss(h, h1).mean().item() == pytest.approx(truth + 0.49, abs=0.01)


def test_renoise_level_range():
    u = torch.linspace(0, 0.999, 1000)
    t = dmd.sample_renoise_level(u, 0.0)
    assert t.min().item() == pytest.approx(0.02) and t.max().item() == pytest.approx(0.98)
    t = dmd.sample_renoise_level(u, torch.full((1000,), 0.75))
    assert t.min().item() == pytest.approx(0.76) and t.max().item() == pytest.approx(0.98)
    assert dmd.sample_renoise_level(torch.tensor([0.5]), 0.5).item() == pytest.approx((510 + 245) / 1000)


def test_the_true_denoiser_is_stationary_for_the_forward_regulariser_not_for_the_published_one():
    """The regulariser should not pull the true score away. For the exact denoiser h of a 1-D mixture (+-2, variance
    0.3), t = 0.5: the forward form's gradient with respect to its prediction h'' at t'' = 0.6 is
    E[(h''(x'') - h(x_t)) phi(x'')] = 0 for every test function phi (tower property); the published form's at t' = 0.4
    after a CPS step (eta = 0.9) is not (the martingale it relies on fails for CPS). Monte Carlo over 400k draws."""
    from rtdmd.worlds.gmm.mixture import Mixture

    mixture = Mixture.create([0.5, 0.5], [[-2.0], [2.0]], torch.full((2, 1, 1), 0.3, dtype=torch.float64))

    def denoiser(x, level):
        return x - level * mixture.velocity(x, torch.full((len(x),), level, dtype=torch.float64))

    gen = torch.Generator().manual_seed(0)
    n, t = 400_000, 0.5
    noise = lambda: torch.randn(n, 1, generator=gen, dtype=torch.float64)  # noqa: E731
    x_t = (1 - t) * mixture.sample(n, gen)[0] + t * noise()
    h = denoiser(x_t, t)
    x_up = flow.renoise(x_t, t, 0.6, noise())
    x_down = samplers.cps_step(x_t, mixture.velocity(x_t, torch.full((n,), t, dtype=torch.float64)), t, 0.4, 0.9, noise())
    for phi in (torch.ones_like, lambda x: x, torch.tanh):
        forward = (denoiser(x_up, 0.6) - h) * phi(x_up)
        assert abs(forward.mean()) < 4 * forward.std() / n**0.5
    published = (denoiser(x_down, 0.4) - h) * x_t
    assert abs(published.mean()) > 20 * published.std() / n**0.5


def test_forward_consistency_loss_regresses_onto_the_detached_prediction():
    h_up, h = torch.randn(3, 2, 2, requires_grad=True), torch.randn(3, 2, 2, requires_grad=True)
    loss = dmd.forward_consistency_loss(h_up, h)
    torch.testing.assert_close(loss, ((h_up - h) ** 2).flatten(1).mean(1))
    loss.sum().backward()
    assert h.grad is None and torch.count_nonzero(h_up.grad) > 0
