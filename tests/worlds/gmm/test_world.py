import pytest
import torch

from rtdmd.config import resolve
from rtdmd.errors import ConfigError
from rtdmd.train.components import build_components
from tests.tiny import TINY


@pytest.fixture(scope="module")
def parts():
    return build_components(resolve(TINY), torch.device("cpu"))


def test_exact_samples_score_at_the_noise_floor(parts):
    world, gen = parts.world, torch.Generator().manual_seed(0)
    samples = {name: world.sample_teacher(i, 1500, gen).float() for i, name in enumerate(world.prompt_names)}
    m = world.evaluate(samples, parts.rewards, beta=1.0)["summary"]
    assert m["ed_teacher"] < 3 * m["ed_teacher_floor"] + 1e-3
    assert m["weight_error_teacher"] < 0.04
    assert m["ed_tilted"] > 5 * m["ed_tilted_floor"]  # the teacher is visibly not p~
    tilted = {name: world.sample_tilted(i, 1500, parts.rewards, 1.0, gen).float()
              for i, name in enumerate(world.prompt_names)}
    m2 = world.evaluate(tilted, parts.rewards, beta=1.0)["summary"]
    assert m2["ed_tilted"] < 3 * m2["ed_tilted_floor"] + 1e-3
    # linear reward w = (0, 1), beta = 1, cov 0.3: every component shifts up by 0.3
    assert m2["reward"] == pytest.approx(0.3, abs=0.04) and m2["reward_tilted"] == pytest.approx(0.3, abs=0.04)


def test_importance_resampling_matches_the_closed_form(parts):
    world, gen = parts.world, torch.Generator().manual_seed(1)
    closed = world.sample_tilted(2, 4000, parts.rewards, 0.5, gen)
    # force the general path: a reward set whose single entry has no closed-form tilt
    class NoTilt:
        differentiable = True

        def __call__(self, x, prompts=(), metadata=None):
            return x.float() @ torch.tensor([0.0, 1.0])

    from rtdmd.rewards.base import RewardSet, WeightedReward
    resampled = world.sample_tilted(2, 4000, RewardSet([WeightedReward("r", NoTilt())]), 0.5, gen)
    torch.testing.assert_close(resampled.mean(0).float(), closed.mean(0).float(), atol=0.05, rtol=0)
    torch.testing.assert_close(resampled.std(0).float(), closed.std(0).float(), atol=0.05, rtol=0)


def test_guided_teacher_uses_the_full_mixture_as_unconditional(parts):
    world = parts.world
    x, sigma = torch.randn(6, 2), torch.full((6,), 0.5)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    v_cond = world.teacher_velocity(x, sigma, ids, guidance=1.0)
    v_uncond = world.mixture.velocity(x, sigma)
    torch.testing.assert_close(world.teacher_velocity(x, sigma, ids, guidance=3.0), v_uncond + 3 * (v_cond - v_uncond))
    # the 'any' prompt draws from every component, so its velocity is the unconditional one
    torch.testing.assert_close(v_cond[4:], v_uncond[4:])


@pytest.mark.parametrize("override, message", [
    ("world.components.0.mean=[0.0]", "same dimension"),
    ("world.components.0.weight=0", "weight must be positive"),
    ("reward.w=[1, 2, 3]", "dimension 2"),
])
def test_world_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        build_components(resolve(TINY, [override]), torch.device("cpu"))
