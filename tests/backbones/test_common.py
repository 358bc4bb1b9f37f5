"""What the diffusers backbones share: the prompt cache computes each prompt once and stays bounded."""

import torch

from tests.backbones.conftest import build


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
