import torch

from rtdmd.functional import flow


def gaussian_velocity(x, sigma, m, var):
    """Exact velocity of 1-D data N(m, var) along the rectified-flow path (closed form)."""
    c = (1 - sigma) ** 2 * var + sigma**2
    resid = x - (1 - sigma) * m
    e_eps = sigma / c * resid
    e_x0 = m + (1 - sigma) * var / c * resid
    return e_eps - e_x0


def test_endpoints_recover_point_mass_data():
    x0 = torch.randn(8, 3, 4, 4)
    eps = torch.randn_like(x0)
    sigma = torch.rand(8)
    x = flow.interpolate(x0, eps, sigma)
    v = eps - x0  # the exact velocity of a point mass at x0
    torch.testing.assert_close(flow.x0_from_velocity(x, sigma, v), x0)
    torch.testing.assert_close(flow.eps_from_velocity(x, sigma, v), eps)


def test_score_from_velocity_matches_gaussian_score():
    m, var, sigma = 0.7, 0.3, 0.4
    x = torch.linspace(-2, 2, 11, dtype=torch.float64)
    v = gaussian_velocity(x, sigma, m, var)
    mean, c = (1 - sigma) * m, (1 - sigma) ** 2 * var + sigma**2
    torch.testing.assert_close(flow.score_from_velocity(x, sigma, v), -(x - mean) / c)


def test_renoise_gives_the_marginal_at_t():
    # Gaussian data N(m, var): the level-s sample renoised to t must be N((1-t) m, (1-t)^2 var + t^2).
    m, var, s, t, n = 0.7, 0.3, 0.6, 0.85, 400_000
    x0 = m + var**0.5 * torch.randn(n, dtype=torch.float64)
    x_s = flow.interpolate(x0, torch.randn_like(x0), s)
    x_t = flow.renoise(x_s, s, t, torch.randn_like(x0))
    assert abs(x_t.mean().item() - (1 - t) * m) < 5e-3
    assert abs(x_t.var().item() - ((1 - t) ** 2 * var + t**2)) / ((1 - t) ** 2 * var + t**2) < 1e-2


def test_ambient_target_is_unbiased_for_the_true_velocity():
    # For Gaussian data the velocity is affine in x_t, so the least-squares regression of T on (1, x_t)
    # must recover the exact velocity's coefficients when T is unbiased.
    m, var, s, t, n = 0.7, 0.3, 0.5, 0.8, 1_000_000
    gen = torch.Generator().manual_seed(1)
    x0 = m + var**0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    x_s = flow.interpolate(x0, torch.randn(n, generator=gen, dtype=torch.float64), s)
    noise = torch.randn(n, generator=gen, dtype=torch.float64)
    x_t = flow.renoise(x_s, s, t, noise)
    target = flow.ambient_target(x_s, s, t, noise)
    design = torch.stack([torch.ones_like(x_t), x_t], 1)
    coef = torch.linalg.lstsq(design, target[:, None]).solution.squeeze(1)
    grid = torch.tensor([0.0, 1.0], dtype=torch.float64)
    exact = gaussian_velocity(grid, t, m, var)
    exact_coef = torch.stack([exact[0], exact[1] - exact[0]])
    torch.testing.assert_close(coef, exact_coef, atol=0.02, rtol=0)


def test_ambient_target_at_s0_is_flow_matching():
    x0, n, t = torch.randn(5, 2, 3), torch.randn(5, 2, 3), torch.rand(5) * 0.9 + 0.05
    torch.testing.assert_close(flow.ambient_target(x0, 0.0, t, n), n - x0)
    torch.testing.assert_close(flow.renoise(x0, 0.0, t, n), flow.interpolate(x0, n, t))


def test_renoise_coefficients_per_sample():
    s = torch.tensor([0.0, 0.5, 0.75])
    t = torch.tensor([0.3, 0.6, 0.9])
    a, sigma_ts = flow.renoise_coefficients(s, t)
    torch.testing.assert_close(a**2 * s**2 + sigma_ts**2, t**2)
    torch.testing.assert_close(a, (1 - t) / (1 - s))


def test_bf16_inputs_use_fp32_coefficients():
    x = torch.randn(4, 8).bfloat16()
    out = flow.x0_from_velocity(x, torch.full((4,), 0.3333), x)
    assert out.dtype == torch.bfloat16
    ref = (x.float() - 0.3333 * x.float()).bfloat16()
    assert torch.equal(out, ref)
