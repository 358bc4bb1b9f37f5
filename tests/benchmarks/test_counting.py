"""The counting wrapper of the benchmarks counts exactly the model calls the spec prescribes, on the tiny analytic
config: one stage-1 iteration with a generator update (spec 4.1-4.6, the per-iteration terms of the counts in 4.8)
and one stage-2 iteration (5.1-5.9), under both presets. Every call is (kind, role or reward, with gradient, rows)."""

import json
from collections import Counter

import pytest

from benchmarks.counting import CallLog, instrumented
from rtdmd.train import align, distill
from tests.tiny import TINY, tiny_config

BATCH = TINY["distill"]["batch_size"]  # 16 samples per stage-1 iteration
GROUP, PROMPTS = TINY["align"]["group_size"], TINY["align"]["prompts_per_iteration"]
MICRO = TINY["align"]["micro_batch"]


def calls(log: CallLog, iteration: int) -> Counter:
    return Counter((c.kind, c.name, c.grad, c.rows) for c in log.iterations()[iteration])


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Two stage-1 iterations (fake_update_ratio 2: the second one also updates the generator)."""
    root = tmp_path_factory.mktemp("counting")
    log = CallLog()
    with instrumented(log):
        distill.run(tiny_config("distill.iterations=2"), root / "s1")
    records = [json.loads(line) for line in (root / "s1" / "metrics.jsonl").read_text().splitlines()]
    return root, log, [r for r in records if "stop_k" in r]


def test_stage1_generator_iteration(stage1):
    _, log, records = stage1
    assert len(log.iterations()) == 2
    k_fake, k_gen = records[1]["stop_k"], records[1]["generator_stop_k"]
    expected = Counter({
        # 4.1: the fake update's rollout stops after k_fake steps, without gradient ...
        ("velocity", "generator", False, BATCH): k_fake + k_gen - 1,
        # ... the generator update's rollout keeps the gradient of its last step only (4.6)
        ("velocity", "generator", True, BATCH): 1,
        # 4.4-4.5: the fake score on x_t with gradient, and on the two consistency copies in one call (2 B rows)
        ("velocity", "fake", True, BATCH): 1,
        ("velocity", "fake", True, 2 * BATCH): 1,
        # 4.6: one teacher evaluation with CFG and one fake forward, both without gradient
        ("velocity", "teacher", False, BATCH): 1,
        ("velocity", "fake", False, BATCH): 1,
    })
    assert calls(log, 1) == expected
    # The first iteration has no generator update: its fake rollout and the fake score's three passes only.
    assert calls(log, 0) == Counter({("velocity", "generator", False, BATCH): records[0]["stop_k"],
                                     ("velocity", "fake", True, BATCH): 1, ("velocity", "fake", True, 2 * BATCH): 1})


def stage2_calls(stage1, *overrides):
    root, _, _ = stage1
    log = CallLog()
    out = root / ("s2" + "".join(o.replace("=", "_").replace(".", "_") for o in overrides))
    with instrumented(log):
        align.run(tiny_config("align.iterations=1", *overrides), out, root / "s1")
    assert len(log.iterations()) == 1
    return calls(log, 0)


def test_stage2_iteration_paper(stage1):
    n = GROUP * PROMPTS
    expected = Counter({
        # 5.1: the 4-step rollout without gradient; 5.9: one decode and the reward, once, without gradient
        ("velocity", "generator", False, n): 4,
        ("decode", "vae", False, n): 1,
        ("reward", "linear", False, n): 1,
        # 5.7: one fake update (anchor + two consistency copies)
        ("velocity", "fake", True, n): 1,
        ("velocity", "fake", True, 2 * n): 1,
        # per micro-batch: SubGRPO on the 2 trained steps and the last step, with gradient (5.3, 5.6) ...
        ("velocity", "generator", True, MICRO): 3 * (n // MICRO),
        # ... DM at s = 0: teacher CFG and fake score without gradient; BP: decode and reward with gradient
        ("velocity", "teacher", False, MICRO): n // MICRO,
        ("velocity", "fake", False, MICRO): n // MICRO,
        ("decode", "vae", True, MICRO): n // MICRO,
        ("reward", "linear", True, MICRO): n // MICRO,
    })
    assert stage2_calls(stage1) == expected


@pytest.mark.parametrize("bp", [True, False])
def test_stage2_iteration_exact(stage1, bp):
    """``exact``: DM back-propagates through the whole rollout (4 more generator passes with gradient); the last
    step with gradient is computed only when BP uses it; the fake score has no consistency term."""
    n, micro_batches = GROUP * PROMPTS, GROUP * PROMPTS // MICRO
    per_micro_batch = 2 + 4 + (1 if bp else 0)  # SubGRPO steps, the replayed rollout, BP's last step
    expected = Counter({
        ("velocity", "generator", False, n): 4,
        ("decode", "vae", False, n): 1,
        ("reward", "linear", False, n): 1,
        ("velocity", "fake", True, n): 1,
        ("velocity", "generator", True, MICRO): per_micro_batch * micro_batches,
        ("velocity", "teacher", False, MICRO): micro_batches,
        ("velocity", "fake", False, MICRO): micro_batches,
    })
    if bp:
        expected.update({("decode", "vae", True, MICRO): micro_batches,
                         ("reward", "linear", True, MICRO): micro_batches})
    assert stage2_calls(stage1, "preset=exact", f"align.bp={str(bp).lower()}") == expected
