"""FLUX.2-klein: conditioning is the stock ``encode_prompt`` (Qwen3 hidden layers stacked)."""

import torch

from tests.backbones.conftest import PROMPTS, build, stock_pipeline


def test_encode_equals_stock_encode_prompt(folders):
    klein = build("flux2_klein", folders["flux2_klein"])
    embeds, _ = stock_pipeline(klein).encode_prompt(PROMPTS, max_sequence_length=64, text_encoder_out_layers=(1, 2))
    torch.testing.assert_close(klein.encode(PROMPTS)["prompt_embeds"], embeds, rtol=0, atol=0)
    assert embeds.shape[-1] == 2 * 16  # two hidden layers of 16 stacked
