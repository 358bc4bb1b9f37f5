import numpy as np
import pytest
import torch

from rtdmd.functional import schedules


def test_sd3_static_shift_matches_spec():
    torch.testing.assert_close(schedules.generator_sigmas(shift=3.0), torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))


def test_flux_dynamic_shift_at_512px_matches_spec():
    mu = schedules.dynamic_shift_mu((512 // 16) ** 2)
    assert mu == pytest.approx(0.63)
    sigmas = schedules.generator_sigmas(mu=mu)
    torch.testing.assert_close(sigmas, torch.tensor([1.0, 0.849, 0.652, 0.385, 0.0]), atol=1e-3, rtol=0)


def test_no_shift_is_identity():
    torch.testing.assert_close(schedules.generator_sigmas(), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def test_shift_formulas_agree_with_diffusers_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    u = [1.0, 0.75, 0.5, 0.25]
    static = FlowMatchEulerDiscreteScheduler(shift=3.0)
    static.set_timesteps(sigmas=u)
    torch.testing.assert_close(schedules.generator_sigmas(shift=3.0), static.sigmas.float())

    dynamic = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, time_shift_type="exponential")
    for mu in (0.3, 0.63, 1.1):
        dynamic.set_timesteps(sigmas=u, mu=mu)
        torch.testing.assert_close(schedules.generator_sigmas(mu=mu), dynamic.sigmas.float(), atol=1e-6, rtol=0)


def test_flux2_empirical_mu_matches_diffusers():
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    for seq, steps in [(256, 4), (1024, 4), (1024, 50), (4096, 28), (5000, 4)]:
        assert schedules.flux2_empirical_mu(seq, steps) == pytest.approx(compute_empirical_mu(seq, steps))


def test_uniform_sigmas_is_a_linspace_through_the_shift():
    sig = schedules.uniform_sigmas(28, shift=3.0)
    u = np.linspace(1.0, 1 / 28, 28)
    np.testing.assert_allclose(sig[:-1].numpy(), 3 * u / (1 + 2 * u), rtol=1e-6)
    assert sig[-1] == 0 and len(sig) == 29


def test_both_shifts_rejected():
    with pytest.raises(ValueError, match="either"):
        schedules.generator_sigmas(shift=3.0, mu=0.5)
