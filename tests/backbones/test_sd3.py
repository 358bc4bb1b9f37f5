"""SD3 / SD3.5: conditioning is the stock ``encode_prompt`` (the embedded world trains its teacher on the
latter), and the dynamic shift (SD3 schedulers with ``use_dynamic_shifting``) is diffusers' ``calculate_shift``."""

import pytest
import torch

from rtdmd.backbones import common
from tests.backbones.conftest import PROMPTS, build, stock_pipeline


def test_encode_equals_stock_encode_prompt(folders):
    for family in ("sd3", "sd3_pixel"):
        backbone = build(family, folders[family])
        pipe = stock_pipeline(backbone)
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(PROMPTS, None, None, max_sequence_length=8,
                                                             do_classifier_free_guidance=True)
        cond = backbone.encode(PROMPTS)
        torch.testing.assert_close(cond["prompt_embeds"], embeds, rtol=0, atol=0)
        torch.testing.assert_close(cond["pooled_prompt_embeds"], pooled, rtol=0, atol=0)
        # The empty prompt (CFG's unconditional branch) is the pipeline's negative prompt; encoded alone, it is
        # bitwise the pipeline's encoding of [""] (in a batch, matmuls may differ in the last bit).
        empty = backbone.encode([""])
        alone, _, alone_pooled, _ = pipe.encode_prompt([""], None, None, max_sequence_length=8,
                                                       do_classifier_free_guidance=False)
        torch.testing.assert_close(empty["prompt_embeds"], alone, rtol=0, atol=0)
        torch.testing.assert_close(empty["pooled_prompt_embeds"], alone_pooled, rtol=0, atol=0)
        torch.testing.assert_close(empty["prompt_embeds"], neg[:1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(empty["pooled_prompt_embeds"], neg_pooled[:1], rtol=1e-6, atol=1e-6)
    # Pixel-space folder without T5: its T5 part is zeros, as the stock pipeline makes it.
    assert backbone.encode(PROMPTS)["prompt_embeds"][:, -8:].abs().max() == 0


@pytest.mark.parametrize("seq_len", [256, 1024, 4096, 9000])
def test_dynamic_mu_is_diffusers_calculate_shift(seq_len):
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    # The SD3 pipeline reads the scheduler config with its own default max_shift (1.16, not the function's 1.15).
    config = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.3}
    assert common.scheduler_mu(config, seq_len) == pytest.approx(calculate_shift(seq_len, 256, 4096, 0.5, 1.3))
    assert common.scheduler_mu({"max_shift": 1.16}, seq_len) == pytest.approx(
        calculate_shift(seq_len, 256, 4096, 0.5, 1.16), rel=1e-12)
