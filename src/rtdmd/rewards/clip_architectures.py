"""The published CLIP architectures a reward's weights must match: key names and shapes of the transformers
``CLIPModel`` state dict, and the config's attention heads and activation (not visible in the shapes). A
mismatch is a one-line :class:`UserError` before anything loads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from rtdmd.errors import UserError
from rtdmd.rewards.loading import load_weights, weight_files

Architecture = Literal["published", "config"]
"""A reward config's ``architecture``: ``published`` (the default) checks the weights' key names and shapes, and
the config's attention heads and activation (not visible in the shapes), against the published model's;
``config`` accepts any model whose weights match its own config (tiny test models, experiments: its scores are
then not the paper's metric). Either way a weights file that does not match its config is refused, because
transformers would otherwise fill the missing tensors with random values and only warn."""

# Buffers that some transformers versions saved with CLIP weights and others do not.
OPTIONAL_KEYS = frozenset({"text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"})


@dataclass(frozen=True)
class ClipArchitecture:
    """The sizes of a published CLIP; the key names and shapes of its transformers ``CLIPModel`` weights follow."""

    name: str
    vision_width: int
    vision_layers: int
    vision_heads: int
    patch: int
    image_size: int
    text_width: int
    text_layers: int
    text_heads: int
    context: int
    vocab: int
    projection: int
    hidden_act: str
    mlp_ratio: int = 4

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Key -> shape of the weights of a transformers ``CLIPModel`` of these sizes."""
        vw, tw, grid = self.vision_width, self.text_width, self.image_size // self.patch
        shapes = {"logit_scale": (), "visual_projection.weight": (self.projection, vw),
                  "text_projection.weight": (self.projection, tw),
                  "text_model.embeddings.token_embedding.weight": (self.vocab, tw),
                  "text_model.embeddings.position_embedding.weight": (self.context, tw),
                  **_norm("text_model.final_layer_norm", tw),
                  "vision_model.embeddings.class_embedding": (vw,),
                  "vision_model.embeddings.patch_embedding.weight": (vw, 3, self.patch, self.patch),
                  "vision_model.embeddings.position_embedding.weight": (grid * grid + 1, vw),
                  **_norm("vision_model.pre_layrnorm", vw), **_norm("vision_model.post_layernorm", vw)}
        for tower, width, layers in (("text_model", tw, self.text_layers), ("vision_model", vw, self.vision_layers)):
            for i in range(layers):
                shapes.update(_block(f"{tower}.encoder.layers.{i}", width, self.mlp_ratio * width))
        return shapes

    def config_mismatch(self, config) -> str | None:
        """What of a transformers ``CLIPConfig`` that the shapes do not show differs from this architecture."""
        found = {"vision heads": config.vision_config.num_attention_heads, "text heads":
                 config.text_config.num_attention_heads, "vision activation": config.vision_config.hidden_act,
                 "text activation": config.text_config.hidden_act}
        published = {"vision heads": self.vision_heads, "text heads": self.text_heads,
                     "vision activation": self.hidden_act, "text activation": self.hidden_act}
        return next((f"{k} {found[k]!r} (published: {published[k]!r})" for k in found if found[k] != published[k]),
                    None)


def _norm(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,)}


def _block(prefix: str, width: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """One transformer block of transformers' CLIP encoder."""
    shapes = {**_norm(f"{prefix}.layer_norm1", width), **_norm(f"{prefix}.layer_norm2", width),
              f"{prefix}.mlp.fc1.weight": (hidden, width), f"{prefix}.mlp.fc1.bias": (hidden,),
              f"{prefix}.mlp.fc2.weight": (width, hidden), f"{prefix}.mlp.fc2.bias": (width,)}
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes[f"{prefix}.self_attn.{proj}.weight"] = (width, width)
        shapes[f"{prefix}.self_attn.{proj}.bias"] = (width,)
    return shapes


# openai/clip-vit-large-patch14 (CLIPScore, and the embedding the LAION aesthetic head reads).
VIT_L_14 = ClipArchitecture("CLIP ViT-L/14 (openai/clip-vit-large-patch14)", vision_width=1024, vision_layers=24,
                            vision_heads=16, patch=14, image_size=224, text_width=768, text_layers=12, text_heads=12,
                            context=77, vocab=49408, projection=768, hidden_act="quick_gelu")
# OpenCLIP ViT-H/14 (laion/CLIP-ViT-H-14-laion2B-s32B-b79K): PickScore and HPSv2.1 are fine-tuned from it.
VIT_H_14 = ClipArchitecture("OpenCLIP ViT-H/14", vision_width=1280, vision_layers=32, vision_heads=16, patch=14,
                            image_size=224, text_width=1024, text_layers=24, text_heads=16, context=77, vocab=49408,
                            projection=1024, hidden_act="gelu")


def check_shapes(found: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]], what: str,
                 fix: str) -> None:
    """One :class:`UserError` line when the key names or shapes of ``found`` are not ``expected``'s."""
    found = {k: tuple(v) for k, v in found.items() if k not in OPTIONAL_KEYS}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    other = sorted(k for k in set(expected) & set(found) if found[k] != tuple(expected[k]))
    problems = [f"{len(missing)} keys missing (first {missing[0]!r})" if missing else "",
                f"{len(extra)} unexpected keys (first {extra[0]!r})" if extra else "",
                f"{len(other)} tensors of another shape (first {other[0]!r}: {found[other[0]]} instead of "
                f"{tuple(expected[other[0]])})" if other else ""]
    if missing or extra or other:
        raise UserError(f"{what}: {', '.join(p for p in problems if p)}: {fix}")


def weight_shapes(files: Sequence[Path]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the tensors in weight files (a safetensors header is read without loading tensors)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        if file.name.endswith(".index.json"):
            continue
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(file), "pt") as handle:
                    shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
            except Exception as err:  # a damaged header: any of several exception types
                raise UserError(f"{file} cannot be read as safetensors ({type(err).__name__}): "
                                "re-download it") from None
        else:
            state = load_weights(file)
            shapes.update({k: tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)})
    return shapes


def check_clip_folder(folder: Path, kind: str, published: ClipArchitecture | None) -> None:
    """Before a CLIP folder loads: its weights match its ``config.json`` and, with ``published``, the
    published model (key names and shapes, attention heads, activation)."""
    from transformers import CLIPConfig, CLIPModel

    try:
        config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # unreadable or not a CLIP config
        raise UserError(f"reward '{kind}': {folder}/config.json is not a CLIP config ({type(err).__name__}): "
                        "restore it from the model's repository") from None
    found = weight_shapes(weight_files(folder))
    where = f"reward '{kind}': the weights in {folder}"
    if published is not None:
        check_shapes(found, published.shapes(), f"{where} are not {published.name}'s",
                     "point the reward's 'path' at that model (or set architecture: config for another CLIP)")
        mismatch = published.config_mismatch(config)
        if mismatch is not None:
            raise UserError(f"reward '{kind}': {folder}/config.json is not {published.name}'s: {mismatch}: restore "
                            "it from the model's repository (or set architecture: config for another CLIP)")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in CLIPModel(config).state_dict().items()}
    check_shapes(found, expected, f"{where} do not match its config.json",
                 "re-download the weights and config.json from the same repository")
