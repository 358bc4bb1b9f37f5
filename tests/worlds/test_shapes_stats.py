import numpy as np
import pytest

from rtdmd.worlds.shapes import stats


def test_mean_intensity_and_saturation_by_hand():
    grey = np.full((2, 3, 4, 4), 0.25)
    red = np.zeros((1, 3, 4, 4))
    red[:, 0] = 0.8
    assert stats.mean_intensity(grey) == pytest.approx(0.25)
    assert stats.saturation(grey) == pytest.approx(0.0)
    assert stats.saturation(red) == pytest.approx(1.0)
    half = np.concatenate([grey[:1], red], axis=0)
    assert stats.saturation(half) == pytest.approx(0.5)


def test_color_entropy_by_hand():
    one = np.full((1, 3, 4, 4), 0.1)
    two = one.copy()
    two[:, :, :2] = 0.9  # half the pixels another bin: 1 bit
    four = one.copy()
    four[:, 0, :2] = 0.9
    four[:, 1, :, :2] = 0.9  # four equally frequent colours: 2 bits
    assert stats.color_entropy(one) == pytest.approx(0.0)
    assert stats.color_entropy(two) == pytest.approx(1.0)
    assert stats.color_entropy(four) == pytest.approx(2.0)


def test_diversity_by_hand():
    a = np.zeros((3, 2, 2))
    images = np.stack([a, a + 0.3, a + 0.5, a])
    # Prompt "p": pairs (0, 0.3), (0, 0.5), (0.3, 0.5) -> RMS 0.3, 0.5, 0.2; prompt "q": one image, ignored.
    assert stats.within_prompt_diversity(images, ["p", "p", "p", "q"]) == pytest.approx((0.3 + 0.5 + 0.2) / 3)
    assert np.isnan(stats.within_prompt_diversity(images[:2], ["p", "q"]))
    assert stats.within_prompt_diversity(np.stack([a, a]), ["p", "p"]) == 0.0


def test_auc_against_counting_every_pair():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=60), 1)  # rounded: ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in pos for n in neg]
    assert stats.auc(scores, labels) == pytest.approx(np.mean(pairs))
    assert stats.auc([0.1, 0.9], [False, True]) == 1.0 and stats.auc([0.9, 0.1], [False, True]) == 0.0
    assert np.isnan(stats.auc([0.1, 0.2], [True, True]))
