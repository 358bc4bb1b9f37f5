"""The GPU benchmark (benchmarks/gpu.py) on this CPU: a depth-reduced variant of a published architecture (one
layer per stack, one sample, 32 px, 8 T5 tokens, float32, constant weights) runs both stages and reports finite
peak memory, time and FLOPs; the same command with no options runs the full architectures on a GPU."""

import math

import pytest

from benchmarks import gpu

pytestmark = pytest.mark.integration


def test_depth_reduced_benchmark_runs_both_stages():
    results = gpu.main(["--recipes", "sd35m", "--depth", "1", "--batch", "1", "--resolution", "32", "--iterations",
                        "1", "--dtype", "fp32", "--init", "fill", "--set", "backbone.max_sequence_length=8"])
    assert set(results) == {("sd35m", "distill"), ("sd35m", "align")}
    for r in results.values():
        assert r["rows"] == 1 and r["peak"] > 2**20 and r["seconds"] > 0
        assert r["flops"] > 1e9 and math.isfinite(r["flops"])
    # Stage 2 adds rollouts, decoding and rewards with gradient: more work than stage 1's iteration.
    assert results[("sd35m", "align")]["flops"] > results[("sd35m", "distill")]["flops"]


def test_depth_cap_keeps_the_widths():
    config = {"num_layers": 24, "attention_head_dim": 64, "dual_attention_layers": [0, 1, 12],
              "text_config": {"num_hidden_layers": 12, "hidden_size": 768}}
    assert gpu.capped(1)(config) == {"num_layers": 1, "attention_head_dim": 64, "dual_attention_layers": [0],
                                     "text_config": {"num_hidden_layers": 1, "hidden_size": 768}}
    assert gpu.capped(None)(config) == config
