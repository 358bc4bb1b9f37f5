"""An independent pure-torch forward of an OpenCLIP ViT CLIP that reads the ORIGINAL OpenCLIP keys, written
from the architecture's definition (pre-LN residual blocks, ``nn.MultiheadAttention`` semantics through
``F.multi_head_attention_forward`` with the packed ``in_proj`` weights, token-0 image pooling after ``ln_post``,
``argmax``-token text pooling after ``ln_final``, ``x @ proj`` projections). It shares no code with the
transformers model the reward loads, so agreement checks the key mapping."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _block(x: Tensor, sd: dict, p: str, heads: int, mask: Tensor | None, act) -> Tensor:
    """x: (L, B, D) sequence-first, as OpenCLIP's nn.MultiheadAttention (batch_first=False) sees it."""
    d = x.shape[-1]
    h = F.layer_norm(x, (d,), sd[f"{p}.ln_1.weight"], sd[f"{p}.ln_1.bias"], eps=1e-5)
    attn, _ = F.multi_head_attention_forward(
        h, h, h, d, heads, sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"], None, None, False, 0.0,
        sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"], training=False, need_weights=False,
        attn_mask=mask)
    x = x + attn
    h = F.layer_norm(x, (d,), sd[f"{p}.ln_2.weight"], sd[f"{p}.ln_2.bias"], eps=1e-5)
    h = F.linear(act(F.linear(h, sd[f"{p}.mlp.c_fc.weight"], sd[f"{p}.mlp.c_fc.bias"])),
                 sd[f"{p}.mlp.c_proj.weight"], sd[f"{p}.mlp.c_proj.bias"])
    return x + h


def encode_image(sd: dict, pixels: Tensor, heads: int, act=F.gelu) -> Tensor:
    """pixels: normalised (B, 3, S, S) -> (B, E) unit vectors."""
    width = sd["visual.class_embedding"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=patch).flatten(2).transpose(1, 2)  # (B, N, D)
    cls = sd["visual.class_embedding"].expand(x.shape[0], 1, width)
    x = torch.cat([cls, x], dim=1) + sd["visual.positional_embedding"]
    x = F.layer_norm(x, (width,), sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"], eps=1e-5)
    x = x.transpose(0, 1)
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    for i in range(layers):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}", heads, None, act)
    x = F.layer_norm(x.transpose(0, 1), (width,), sd["visual.ln_post.weight"], sd["visual.ln_post.bias"], eps=1e-5)
    return F.normalize(x[:, 0] @ sd["visual.proj"], dim=-1)


def encode_text(sd: dict, tokens: Tensor, heads: int, act=F.gelu) -> Tensor:
    """tokens: (B, context) OpenCLIP-style (zero-padded after end-of-text) -> (B, E) unit vectors."""
    width = sd["token_embedding.weight"].shape[1]
    context = tokens.shape[1]
    x = sd["token_embedding.weight"][tokens] + sd["positional_embedding"][:context]
    mask = torch.full((context, context), float("-inf")).triu(1)
    x = x.transpose(0, 1)
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    for i in range(layers):
        x = _block(x, sd, f"transformer.resblocks.{i}", heads, mask, act)
    x = F.layer_norm(x.transpose(0, 1), (width,), sd["ln_final.weight"], sd["ln_final.bias"], eps=1e-5)
    pooled = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]
    return F.normalize(pooled @ sd["text_projection"], dim=-1)


def openclip_tokens(tokenizer, prompts: list[str], context: int) -> Tensor:
    """Token ids as OpenCLIP lays them out: <start> ids <end>, then zeros up to ``context``."""
    rows = []
    for ids in tokenizer(prompts, truncation=True, max_length=context)["input_ids"]:
        rows.append(ids + [0] * (context - len(ids)))
    return torch.tensor(rows)
