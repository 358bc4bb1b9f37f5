"""Conditioning: the backbone's ``encode`` is the stock ``encode_prompt`` (the embedded world trains its teacher
on the latter), computed once per prompt."""

import torch

from tests.backbones.conftest import PROMPTS, build, stock_pipeline


def test_sd3_encode_equals_stock_encode_prompt(folders):
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


def test_flux_families_encode_equals_stock(folders):
    flux = build("flux1_dev", folders["flux1_dev"])
    embeds, pooled, _ = stock_pipeline(flux).encode_prompt(PROMPTS, max_sequence_length=8)
    torch.testing.assert_close(flux.encode(PROMPTS)["prompt_embeds"], embeds, rtol=0, atol=0)
    torch.testing.assert_close(flux.encode(PROMPTS)["pooled_prompt_embeds"], pooled, rtol=0, atol=0)
    klein = build("flux2_klein", folders["flux2_klein"])
    embeds, _ = stock_pipeline(klein).encode_prompt(PROMPTS, max_sequence_length=64, text_encoder_out_layers=(1, 2))
    torch.testing.assert_close(klein.encode(PROMPTS)["prompt_embeds"], embeds, rtol=0, atol=0)
    assert embeds.shape[-1] == 2 * 16  # two hidden layers of 16 stacked


def test_prompts_are_encoded_once_and_the_cache_is_bounded(folders):
    backbone = build("sd3", folders["sd3"], prompt_cache=2)
    calls = []
    encode = backbone._cache._encode
    backbone._cache._encode = lambda prompts: calls.append(list(prompts)) or encode(prompts)
    first = backbone.encode(["a", "b", "a"])
    again = backbone.encode(["b", "a"])
    assert calls == [["a", "b"]]  # each prompt once, duplicates within a batch too
    torch.testing.assert_close(again["prompt_embeds"], first["prompt_embeds"][[1, 0]], rtol=0, atol=0)
    backbone.encode(["c"])  # capacity 2: the least recently used ("b") is dropped
    backbone.encode(["a"])
    backbone.encode(["b"])
    assert calls == [["a", "b"], ["c"], ["b"]]
    backbone.encode([""])  # the empty prompt is pinned: it survives any number of other prompts
    backbone.encode(["d", "e", "f"])
    backbone.encode([""])
    assert calls[-2:] == [[""], ["d", "e", "f"]] and len(backbone._cache) == 2 + 1
