"""The demo's evaluation helpers (rtdmd.app.world_metrics): timed sampling reproduces the untimed samples, per-seed
summaries, and the standard error against hand-computed values."""

import math

import pytest
import torch

from rtdmd.app.world_metrics import per_seed, sample_role, sample_timed, standard_error
from rtdmd.train.components import build_components
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def parts_and_config():
    config = tiny_config()
    return build_components(config, torch.device("cpu")), config


def test_timed_samples_are_the_untimed_ones_and_only_full_batches_are_timed(parts_and_config):
    parts, config = parts_and_config  # 3 prompts: batches of 2 prompts leave a short last batch
    for role in ("generator", "teacher"):
        timed = sample_timed(parts, config, role=role, num=4, seed=7, teacher_steps=6, prompts_per_batch=2)
        plain = sample_role(parts, config, role=role, num=4, seed=7, teacher_steps=6)
        assert list(timed.samples) == list(plain)
        for prompt in plain:
            torch.testing.assert_close(timed.samples[prompt], plain[prompt], rtol=0, atol=1e-6)
        assert timed.batch == 8 and len(timed.seconds) == len(timed.cpu_seconds) == 1
        assert all(s > 0 for s in timed.seconds)


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # the analytic world's spread of one sample: NaN, as documented
def test_per_seed_summaries_split_the_samples_by_seed(parts_and_config):
    parts, config = parts_and_config
    samples = sample_role(parts, config, num=3, seed=1)
    seeds = per_seed(parts.world, samples, parts.rewards, config.beta)
    assert len(seeds) == 3
    one = parts.world.evaluate({p: x[1:2] for p, x in samples.items()}, parts.rewards, config.beta)["summary"]
    assert seeds[1]["reward"] == pytest.approx(one["reward"])


def test_standard_error_by_hand():
    # values 1, 2, 3, 6: mean 3, squared deviations 4 + 1 + 0 + 9 = 14, variance 14/3, s.e. sqrt(14/3/4).
    assert standard_error([1, 2, 3, 6]) == pytest.approx(math.sqrt(14 / 12))
    assert math.isnan(standard_error([1.0]))
    assert math.isnan(standard_error([1.0, float("nan")]))
