"""FLUX.1: conditioning is the stock ``encode_prompt``, and the dynamic shift is diffusers' ``calculate_shift``
with the scheduler's constants."""

import pytest
import torch

from rtdmd.backbones import common
from tests.backbones.conftest import PROMPTS, build, stock_pipeline


def test_encode_equals_stock_encode_prompt(folders):
    flux = build("flux1_dev", folders["flux1_dev"])
    embeds, pooled, _ = stock_pipeline(flux).encode_prompt(PROMPTS, max_sequence_length=8)
    torch.testing.assert_close(flux.encode(PROMPTS)["prompt_embeds"], embeds, rtol=0, atol=0)
    torch.testing.assert_close(flux.encode(PROMPTS)["pooled_prompt_embeds"], pooled, rtol=0, atol=0)


@pytest.mark.parametrize("seq_len", [16, 256, 1024, 4096])
def test_dynamic_mu_is_diffusers_calculate_shift(seq_len):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    config = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}
    assert common.scheduler_mu(config, seq_len) == pytest.approx(calculate_shift(seq_len), rel=1e-12)
    assert common.scheduler_mu({}, seq_len) == pytest.approx(calculate_shift(seq_len), rel=1e-12)  # FLUX defaults
