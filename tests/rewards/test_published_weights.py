"""Reward weight files in their published formats: the real LAION aesthetic head (from the shared folder) against
a hand-written forward of its tensors, and the checks that refuse, in one line, weights that are not the
published architectures (CLIP ViT-L/14, OpenCLIP ViT-H/14, the aesthetic head) or that do not match their own
config."""

import json
import struct

import pytest
import torch

from rtdmd.errors import ConfigError, UserError
from rtdmd.rewards import aesthetic, clip_architectures, hpsv2, loading
from tests.rewards import tiny_clip
from tests.shared_data import published_sha256, shared_dir

HEAD = "weights/laion_aesthetic/sac+logos+ava1-l14-linearMSE.pth"
# The published head, as its repository defines it: Linear(768, 1024), Dropout, Linear(1024, 128), Dropout,
# Linear(128, 64), Dropout, Linear(64, 16), Linear(16, 1) under the module list "layers".
HEAD_SHAPES = {"layers.0.weight": (1024, 768), "layers.0.bias": (1024,), "layers.2.weight": (128, 1024),
               "layers.2.bias": (128,), "layers.4.weight": (64, 128), "layers.4.bias": (64,),
               "layers.6.weight": (16, 64), "layers.6.bias": (16,), "layers.7.weight": (1, 16), "layers.7.bias": (1,)}


def test_real_laion_aesthetic_head_equals_a_hand_written_forward():
    file = shared_dir() / HEAD
    assert loading.file_sha256(file) == published_sha256()[HEAD]
    raw = torch.load(file, map_location="cpu", weights_only=True)  # read independently of our loader
    assert {k: tuple(v.shape) for k, v in raw.items()} == HEAD_SHAPES
    state = aesthetic.load_state_dict(file)  # our loading path (weights_only=True inside)
    aesthetic.check_published(state, file)
    head = aesthetic.mlp_from_state_dict(state)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 768, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=-1, keepdim=True)  # unit vectors, as the normalised CLIP embeddings it reads
    h = x
    for i in (0, 2, 4, 6, 7):  # five affine maps; dropout is the identity at inference
        h = h @ raw[f"layers.{i}.weight"].double().T + raw[f"layers.{i}.bias"].double()
    with torch.no_grad():
        ours = head(x.float()).squeeze(-1).double()
    torch.testing.assert_close(ours, h[:, 0], atol=1e-4, rtol=1e-5)
    assert h.std() > 0.01  # the inputs matter: not a constant head


def _transformers_shapes(arch):
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=arch.vocab, hidden_size=arch.text_width, intermediate_size=4 * arch.text_width,
                         num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads,
                         max_position_embeddings=arch.context, hidden_act=arch.hidden_act),
        vision_config=dict(hidden_size=arch.vision_width, intermediate_size=4 * arch.vision_width,
                           num_hidden_layers=arch.vision_layers, num_attention_heads=arch.vision_heads,
                           image_size=arch.image_size, patch_size=arch.patch, hidden_act=arch.hidden_act),
        projection_dim=arch.projection)
    with torch.device("meta"):
        return config, {k: tuple(v.shape) for k, v in CLIPModel(config).state_dict().items()}


@pytest.mark.parametrize("arch, params", [(clip_architectures.VIT_L_14, 427_616_513), (clip_architectures.VIT_H_14, 986_109_441)])
def test_published_architectures_are_transformers_clip_models(arch, params):
    _, shapes = _transformers_shapes(arch)
    assert arch.shapes() == shapes
    assert sum(torch.Size(s).numel() for s in shapes.values()) == params  # 428M and 986M, as published


def _sparse_safetensors(path, shapes):
    """A safetensors file with these tensor shapes whose data is a hole in the file (a 1.7 GB ViT-L/14 takes no
    disk space and is never read: the checks read the header only)."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 2 * torch.Size(shape).numel()
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        out.truncate(8 + len(text) + offset)


@pytest.fixture(scope="module")
def published_clip(tmp_path_factory):
    """A folder with ViT-L/14's config.json and a (sparse) weights file of its published key names and shapes."""
    folder = tmp_path_factory.mktemp("vit_l_14")
    config, shapes = _transformers_shapes(clip_architectures.VIT_L_14)
    config.save_pretrained(folder)
    _sparse_safetensors(folder / "model.safetensors", shapes)
    return folder, shapes


def test_published_clip_passes_and_deliberately_wrong_ones_fail(published_clip, tmp_path):
    folder, shapes = published_clip
    clip_architectures.check_clip_folder(folder, "clipscore", clip_architectures.VIT_L_14)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text((folder / "config.json").read_text())
    cases = [  # (what is wrong with the weights, the message)
        ({k: v for k, v in shapes.items() if k != "visual_projection.weight"},
         "1 keys missing (first 'visual_projection.weight')"),
        ({**shapes, "visual_projection.weight": (512, 1024)},
         "1 tensors of another shape (first 'visual_projection.weight': (512, 1024) instead of (768, 1024))"),
        ({**shapes, "visual.proj": (1024, 768)}, "1 unexpected keys (first 'visual.proj')"),
    ]
    for weights, message in cases:
        _sparse_safetensors(wrong / "model.safetensors", weights)
        with pytest.raises(UserError) as err:
            clip_architectures.check_clip_folder(wrong, "clipscore", clip_architectures.VIT_L_14)
        text = str(err.value)
        assert text.startswith(f"reward 'clipscore': the weights in {wrong} are not CLIP ViT-L/14 "
                               "(openai/clip-vit-large-patch14)'s: ") and message in text and "\n" not in text
    # The right shapes but another activation in config.json (invisible in the shapes).
    _sparse_safetensors(wrong / "model.safetensors", shapes)
    config = json.loads((folder / "config.json").read_text())
    config["vision_config"]["hidden_act"] = "gelu"
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="vision activation 'gelu' \\(published: 'quick_gelu'\\)"):
        clip_architectures.check_clip_folder(wrong, "clipscore", clip_architectures.VIT_L_14)


def test_a_small_clip_is_refused_as_published_and_checked_against_its_config(clip_folder, tmp_path):
    with pytest.raises(UserError, match="are not OpenCLIP ViT-H/14's: 832 keys missing .*, 77 tensors of another"):
        clip_architectures.check_clip_folder(clip_folder, "pickscore", clip_architectures.VIT_H_14)
    clip_architectures.check_clip_folder(clip_folder, "pickscore", None)  # architecture: config
    # A weights file that lost a tensor, next to an intact config.json: transformers would fill it with random
    # values and only warn; the check refuses it whatever the architecture setting.
    from safetensors.torch import load_file, save_file

    damaged = tmp_path / "damaged"
    tiny_clip.write_clip_folder(damaged, seed=3)
    state = load_file(str(damaged / "model.safetensors"))
    del state["text_model.encoder.layers.1.mlp.fc2.bias"]
    save_file(state, str(damaged / "model.safetensors"))
    with pytest.raises(UserError, match="do not match its config.json: 1 keys missing "
                                        "\\(first 'text_model.encoder.layers.1.mlp.fc2.bias'\\)"):
        clip_architectures.check_clip_folder(damaged, "clipscore", None)


def _openclip_state(width, layers, vision_width, vision_layers, patch, image, context, vocab, projection):
    """An OpenCLIP CLIP state dict (meta tensors: shapes only) written from OpenCLIP's module layout."""
    def block(prefix, w):
        return {f"{prefix}ln_1.weight": (w,), f"{prefix}ln_1.bias": (w,), f"{prefix}attn.in_proj_weight": (3 * w, w),
                f"{prefix}attn.in_proj_bias": (3 * w,), f"{prefix}attn.out_proj.weight": (w, w),
                f"{prefix}attn.out_proj.bias": (w,), f"{prefix}ln_2.weight": (w,), f"{prefix}ln_2.bias": (w,),
                f"{prefix}mlp.c_fc.weight": (4 * w, w), f"{prefix}mlp.c_fc.bias": (4 * w,),
                f"{prefix}mlp.c_proj.weight": (w, 4 * w), f"{prefix}mlp.c_proj.bias": (w,)}

    shapes = {"visual.conv1.weight": (vision_width, 3, patch, patch), "visual.class_embedding": (vision_width,),
              "visual.positional_embedding": ((image // patch) ** 2 + 1, vision_width),
              "visual.ln_pre.weight": (vision_width,), "visual.ln_pre.bias": (vision_width,),
              "visual.ln_post.weight": (vision_width,), "visual.ln_post.bias": (vision_width,),
              "visual.proj": (vision_width, projection), "token_embedding.weight": (vocab, width),
              "positional_embedding": (context, width), "ln_final.weight": (width,), "ln_final.bias": (width,),
              "text_projection": (width, projection), "logit_scale": ()}
    for i in range(vision_layers):
        shapes.update(block(f"visual.transformer.resblocks.{i}.", vision_width))
    for i in range(layers):
        shapes.update(block(f"transformer.resblocks.{i}.", width))
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def test_hpsv2_checkpoint_must_be_vit_h_14(hps_folder, tmp_path):
    vit_h = _openclip_state(1024, 24, 1280, 32, 14, 224, 77, 49408, 1024)
    hpsv2.check_published(vit_h, tmp_path / "HPS_v2.1_compressed.pt")
    vit_l = _openclip_state(768, 12, 1024, 24, 14, 224, 77, 49408, 768)
    with pytest.raises(UserError, match="is not an OpenCLIP ViT-H/14 checkpoint: 320 keys missing .*, 589 tensors "
                                        "of another shape") as err:
        hpsv2.check_published(vit_l, tmp_path / "HPS_v2.1_compressed.pt")
    assert "\n" not in str(err.value)
    # Through the reward's own loading path: the tiny checkpoint in the published file format is refused.
    with pytest.raises(UserError, match="HPS_v2.1_compressed.pt is not an OpenCLIP ViT-H/14 checkpoint"):
        hpsv2.build_hpsv2(hpsv2.HPSv2Config(path=str(hps_folder[0])))
    with pytest.raises(ConfigError, match="must be OpenCLIP ViT-H/14's \\(16, 16, gelu\\)"):
        hpsv2.HPSv2Config(vision_heads=2)


def test_aesthetic_head_of_another_shape_is_refused(tmp_path, clip_folder):
    file = tmp_path / f"{aesthetic.MLP_STEM}.pth"
    small = {"layers.0.weight": torch.zeros(16, 512), "layers.0.bias": torch.zeros(16),
             "layers.2.weight": torch.zeros(1, 16), "layers.2.bias": torch.zeros(1)}
    torch.save(small, file)
    message = ("is not the published LAION head .*: 6 keys missing \\(first 'layers.4.bias'\\), 4 tensors of another "
               "shape \\(first 'layers.0.bias': \\(16,\\) instead of \\(1024,\\)\\)")
    with pytest.raises(UserError, match=message):
        aesthetic.build_aesthetic(aesthetic.AestheticConfig(path=str(tmp_path), clip_path=str(clip_folder)))
    # The real head passes its own check and the build goes on to the CLIP model, which must be ViT-L/14.
    real = tmp_path / "real"
    real.mkdir()
    (real / file.name).write_bytes((shared_dir() / HEAD).read_bytes())
    with pytest.raises(UserError, match="reward 'aesthetic': the weights in .* are not CLIP ViT-L/14"):
        aesthetic.build_aesthetic(aesthetic.AestheticConfig(path=str(real), clip_path=str(clip_folder)))
