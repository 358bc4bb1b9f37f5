"""The diffusers CPS scheduler: levels, the step is ``cps_step``, noise only on stochastic steps, config I/O."""

import math

import pytest
import torch

from rtdmd.functional.samplers import cps_step
from rtdmd.functional.schedules import dynamic_shift_mu
from rtdmd.scheduler import CPSScheduler


def test_levels_sd3_static_shift_and_flux_dynamic():
    s = CPSScheduler(shift=3.0)
    s.set_timesteps(4)
    torch.testing.assert_close(s.sigmas, torch.tensor([1.0, 0.9, 0.75, 0.5, 0.0]))
    torch.testing.assert_close(s.timesteps, torch.tensor([1000.0, 900.0, 750.0, 500.0]))
    f = CPSScheduler(use_dynamic_shifting=True)
    f.set_timesteps(4, mu=dynamic_shift_mu(1024))  # 512 px FLUX.1: mu = 0.63
    u = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64)
    expected = math.exp(0.63) / (math.exp(0.63) + 1 / u - 1)
    torch.testing.assert_close(f.sigmas[:4], expected.float(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="num_inference_steps=4"):
        s.set_timesteps(28)
    with pytest.raises(ValueError, match="mu"):
        f.set_timesteps(4)


def test_step_is_cps_with_noise_only_on_stochastic_steps():
    s = CPSScheduler(shift=3.0, eta=0.9)
    s.set_timesteps(4)
    x = torch.randn(2, 3, 4, 4)
    v = torch.randn(2, 3, 4, 4)
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    out = s.step(v, s.timesteps[1], x, generator=gens).prev_sample
    ref_gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    z = torch.stack([torch.randn(3, 4, 4, generator=g) for g in ref_gens])
    torch.testing.assert_close(out, cps_step(x, v, 0.9, 0.75, 0.9, z), rtol=0, atol=0)
    # The last step (to 0) is deterministic: x0_hat = x - sigma v, and the generators do not advance.
    state = [g.get_state() for g in gens]
    last = s.step(v, s.timesteps[3], x, generator=gens).prev_sample
    torch.testing.assert_close(last, x - 0.5 * v, rtol=0, atol=1e-6)
    assert all(torch.equal(a, g.get_state()) for a, g in zip(state, gens))
    # The generator set on the scheduler (pipelines do not pass theirs to step) is used the same way.
    s.set_generator([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)])
    torch.testing.assert_close(s.step(v, s.timesteps[1], x).prev_sample, out, rtol=0, atol=0)


def test_eta_zero_is_euler_and_config_round_trips(tmp_path):
    s = CPSScheduler(shift=3.0, eta=0.0, denoising_step_list=(1000, 500))
    s.set_timesteps(2)
    x, v = torch.randn(1, 4), torch.randn(1, 4)
    out = s.step(v, 1000.0, x, return_dict=False)[0]
    torch.testing.assert_close(out, x + (0.75 - 1.0) * v, rtol=1e-6, atol=1e-6)
    s.save_pretrained(tmp_path)
    loaded = CPSScheduler.from_pretrained(tmp_path)
    assert loaded.config.eta == 0.0 and tuple(loaded.config.denoising_step_list) == (1000, 500)
    assert loaded.config.shift == 3.0 and loaded.config.use_flow_sigmas
