"""The three reward kinds of the shapes world, built through the registry from the shipped weights."""

import numpy as np
import pytest
import torch

from rtdmd import registry
from rtdmd.config.strict import build
from rtdmd.errors import UserError
from rtdmd.rewards.base import Reward
from rtdmd.worlds.shapes import oracle, prompts, render


def _reward(kind: str, **params):
    cfg = build(registry.config_class("reward", kind), {"kind": kind, **params})
    return registry.builder("reward", kind)(cfg, world=None, device="cpu")


@pytest.fixture(scope="module")
def pairs():
    """Held-out prompts, an image rendered for each, and a mismatched prompt the image does not satisfy."""
    rng = np.random.default_rng(0)
    records = prompts.split(prompts.grammar())["eval"] * 2
    images = render.render_batch(records, rng)
    blobs = [oracle.detect(im) for im in images]
    others = []
    for k, b in enumerate(blobs):
        pool = [r for r in prompts.grammar() if not oracle.check(b, r)]
        others.append(pool[rng.integers(len(pool))])
    return torch.from_numpy(images), records, others


@pytest.mark.parametrize("kind", ["shapes_clip", "shapes_pref"])
def test_learned_rewards_prefer_matched_pairs(kind, pairs):
    images, records, others = pairs
    reward = _reward(kind)
    assert isinstance(reward, Reward) and reward.differentiable
    matched = reward(images, [r["prompt"] for r in records])
    mismatched = reward(images, [r["prompt"] for r in others])
    assert matched.shape == (len(records),) and matched.dtype == torch.float32
    assert (matched > mismatched).float().mean() >= 0.9
    assert matched.mean() > mismatched.mean()


@pytest.mark.parametrize("kind", ["shapes_clip", "shapes_pref"])
def test_learned_rewards_are_differentiable_in_the_pixels(kind, pairs):
    images, records, _ = pairs
    x = images[:4].clone().requires_grad_(True)
    _reward(kind)(x, [r["prompt"] for r in records[:4]]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Finite-difference check of the gradient along a random direction (float64 would be exact; float32 ~1e-3).
    reward = _reward(kind)
    direction = torch.randn_like(x)
    eps = 1e-3
    plus = reward(x.detach() + eps * direction, [r["prompt"] for r in records[:4]]).sum()
    minus = reward(x.detach() - eps * direction, [r["prompt"] for r in records[:4]]).sum()
    assert (plus - minus).item() / (2 * eps) == pytest.approx((x.grad * direction).sum().item(), rel=0.05, abs=1e-3)


def test_oracle_reward_scores_verdicts(pairs):
    images, records, others = pairs
    reward = _reward("shapes_oracle")
    assert not reward.differentiable
    texts = [r["prompt"] for r in records]
    assert reward(images, texts, records).tolist() == [1.0] * len(records)
    assert reward(images, [r["prompt"] for r in others], others).sum() == 0
    with pytest.raises(UserError, match="metadata"):
        reward(images, texts, None)


def test_wrong_image_size_and_missing_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="32, 32"):
        _reward("shapes_clip")(torch.zeros(1, 3, 64, 64), ["a circle"])
    with pytest.raises(UserError, match="not found"):
        _reward("shapes_pref", weights=str(tmp_path / "none.safetensors"))
