"""The soft oracle (``shapes_soft``) against things computed independently of it: the exact oracle's verdicts on
rendered images and on damaged ones, brute-force counting, finite differences."""

import itertools

import numpy as np
import pytest
import torch

from rtdmd import registry
from rtdmd.config.strict import build
from rtdmd.errors import UserError
from rtdmd.worlds.shapes import oracle, prompts, render, soft_oracle, stats


def _reward(**params):
    cfg = build(registry.config_class("reward", "shapes_soft"), {"kind": "shapes_soft", **params})
    return registry.builder("reward", "shapes_soft")(cfg, world=None, device="cpu")


@pytest.fixture(scope="module")
def labelled():
    """Rendered images of every tag, each against its own prompt and against a random prompt of the grammar,
    with the exact oracle's verdicts."""
    rng = np.random.default_rng(0)
    grammar = prompts.grammar()
    records = prompts.sample_records(rng, 120)
    images = render.render_batch(records, rng)
    others = [grammar[rng.integers(len(grammar))] for _ in records]
    images = np.concatenate([images, images])
    metadata = records + others
    return images, metadata, oracle.score(images, metadata)


def test_soft_oracle_agrees_with_the_oracle_on_rendered_images(labelled):
    images, metadata, verdicts = labelled
    p = soft_oracle.soft_score(torch.from_numpy(images), metadata).numpy()
    assert p.shape == (len(images),) and ((0 <= p) & (p <= 1)).all()
    assert 0.3 < verdicts.mean() < 0.7
    assert stats.auc(p, verdicts) == 1.0
    assert p[verdicts].min() > 0.9 and p[~verdicts].max() < 0.1


def test_soft_oracle_ranks_damaged_images_like_the_oracle(labelled):
    """Near misses: noise, dimmed colours and erased patches make the oracle reject some images; the soft
    probability must still order accepted above rejected ones."""
    images, metadata, _ = labelled
    rng = np.random.default_rng(1)
    damaged = images + rng.normal(0, 0.12, images.shape).astype(np.float32)
    damaged = damaged * rng.uniform(0.6, 1.0, (len(images), 1, 1, 1)).astype(np.float32)
    for img in damaged:
        y, x = rng.integers(0, 28, size=2)
        img[:, y:y + 5, x:x + 5] = 0.5
    damaged = np.clip(damaged, 0, 1).astype(np.float32)
    verdicts = oracle.score(damaged, metadata)
    p = soft_oracle.soft_score(torch.from_numpy(damaged), metadata).numpy()
    assert 0.15 < verdicts.mean() < 0.6
    assert stats.auc(p, verdicts) >= 0.95


def test_counting_means_exactly_and_other_tags_at_least():
    """k drawn objects against "n shapes" (exactly n) and "a circle and a square" (at least one each)."""
    counting = {(r["include"][0]["class"], r["include"][0]["count"]): r for r in prompts.grammar()
                if r["tag"] == "counting"}
    for shape in render.SHAPES:
        for k in range(1, 5):
            image = render.draw([render.Placed(shape, "red", cell // 3, cell % 3) for cell in (0, 4, 8, 2)[:k]])
            metadata = [counting[shape, n] for n in range(1, 5)]
            p = soft_oracle.soft_score(torch.from_numpy(np.stack([image] * 4)), metadata).numpy()
            assert list(oracle.score(np.stack([image] * 4), metadata)) == [n == k for n in range(1, 5)]
            assert all((q > 0.9) == (n == k) and (q > 0.9 or q < 0.1) for n, q in zip(range(1, 5), p))
    two = next(r for r in prompts.grammar() if r["prompt"] == "a circle and a square")
    image = render.draw([render.Placed("circle", "red", 0, 0), render.Placed("circle", "blue", 1, 1),
                         render.Placed("square", "green", 2, 2)])
    assert soft_oracle.soft_score(torch.from_numpy(image[None]), [two]).item() > 0.9


def test_count_distribution_matches_enumeration():
    p = torch.tensor([0.1, 0.7, 0.5, 0.95], dtype=torch.float64)
    expected = torch.zeros(5, dtype=torch.float64)
    for outcome in itertools.product((0, 1), repeat=4):
        expected[sum(outcome)] += torch.prod(torch.where(torch.tensor(outcome, dtype=torch.bool), p, 1 - p))
    assert torch.allclose(soft_oracle.count_distribution(p), expected)


def test_sharp_temperatures_give_the_oracle_verdicts(labelled):
    """As the temperatures go to 0 the soft oracle becomes the oracle, image by image (damaged images included)."""
    images, metadata, _ = labelled
    rng = np.random.default_rng(3)
    noisy = np.clip(images + rng.normal(0, 0.15, images.shape), 0, 1).astype(np.float32)
    verdicts = oracle.score(noisy, metadata)
    sharp = soft_oracle.Temperatures(color=1e-4, threshold=1e-4, shape=1e-4)
    p = soft_oracle.soft_score(torch.from_numpy(noisy).double(), metadata, sharp).numpy()
    assert 0.2 < verdicts.mean() < 0.6
    assert np.array_equal(p >= 0.5, verdicts)  # an IoU of exactly MIN_IOU is accepted: sigmoid(0) = 0.5


def test_gradient_matches_finite_differences(labelled):
    images, metadata, _ = labelled
    rng = np.random.default_rng(2)
    x = torch.from_numpy(np.clip(images[:6] + rng.normal(0, 0.1, images[:6].shape), 0, 1)).double()
    x.requires_grad_(True)
    meta = metadata[:6]
    soft_oracle.soft_score(x, meta).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    direction = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = 1e-6
    plus = soft_oracle.soft_score(x.detach() + eps * direction, meta).sum()
    minus = soft_oracle.soft_score(x.detach() - eps * direction, meta).sum()
    assert ((plus - minus) / (2 * eps)).item() == pytest.approx((x.grad * direction).sum().item(), rel=1e-4)


def test_reward_kind_scores_and_refuses_missing_metadata(labelled):
    images, metadata, _ = labelled
    x = torch.from_numpy(images[:8]).requires_grad_(True)
    reward = _reward()
    assert reward.differentiable
    p = reward(x, [m["prompt"] for m in metadata[:8]], metadata[:8])
    assert p.shape == (8,) and p.dtype == torch.float32
    p.sum().backward()
    assert x.grad is not None
    log = _reward(output="log")(x.detach(), [m["prompt"] for m in metadata[:8]], metadata[:8])
    assert torch.allclose(log, torch.log(p.detach() + 1e-3))
    with pytest.raises(UserError, match="metadata"):
        reward(x, ["a circle"] * 8, None)
    with pytest.raises(UserError, match=r"\(B, 3, 32, 32\)"):
        reward(torch.zeros(2, 3, 16, 16), ["a circle"] * 2, metadata[:2])
