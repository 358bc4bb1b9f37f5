"""The shapes world's teacher as a stock diffusers ``StableDiffusion3Pipeline`` folder (pixel space).

Components (spec section 6, SD3 row, scaled down):

- ``transformer``: ``SD3Transformer2DModel``, 6 layers, 4 heads of 32, patch 4, on ``(3, 32, 32)`` pixels
  (``sample_size = 32``: the pipeline's latent size is ``height // 8`` with no VAE, so its default height of
  ``32 * 8 = 256`` gives 32x32 "latents" = pixels; the pixel image is ``(x + 1) / 2``).
- ``text_encoder`` / ``text_encoder_2``: two tiny ``CLIPTextModelWithProjection`` (2 layers, width 64), left at
  their seeded random initialisation and frozen. A random causal transformer still gives every prompt a
  distinct, position-aware embedding; the SD3 transformer learns to read it. Freezing them lets training
  cache the embeddings of the finite grammar and keeps ``encode_prompt`` exactly the stock one.
- ``tokenizer`` / ``tokenizer_2``: ``CLIPTokenizer`` (BPE) built locally for the world's 21 words (plus the
  letters, so any lower-case text tokenizes), at most 12 tokens.
- ``text_encoder_3`` / ``tokenizer_3`` / ``vae``: null. Without T5 the stock pipeline appends
  ``max_sequence_length`` zero vectors to the context; the teacher was trained with
  :data:`MAX_SEQUENCE_LENGTH` of them, so pass ``max_sequence_length=MAX_SEQUENCE_LENGTH`` (the stock default 256
  also runs, but makes every forward ~4x slower and is outside the training distribution).
- ``scheduler``: ``FlowMatchEulerDiscreteScheduler`` with ``shift = SHIFT`` (see :data:`SHIFT`).
"""

from __future__ import annotations

from pathlib import Path

from rtdmd.worlds.shapes.prompts import vocabulary
from rtdmd.worlds.shapes.render import IMAGE_SIZE

TOKENS = 12  # CLIP context: the longest prompt has 7 words + BOS/EOS
MAX_SEQUENCE_LENGTH = 1  # zero "T5" tokens appended by the stock pipeline when text_encoder_3 is None
SHIFT = 1.0
"""SD3 shifts its schedule by sqrt(m / n) relative to the size n at which no shift is needed (SD3 paper,
section 5.3.2: shift 3 for 1024 px, i.e. 128x128x16 latents, against 256 px, i.e. 32x32x16). Our 32x32x3 pixels
hold fewer values than that reference, so the rule gives a shift below 1; we keep 1 (no shift): the
teacher's 28-50-step sampler and the generator's 4-step grid [1, .75, .5, .25] are then the raw levels."""
TEXT_SEED = 1234  # the frozen random text encoders are a function of this seed


BPE_FILE = Path(__file__).resolve().parents[2] / "assets" / "shapes" / "tokenizer_bpe.json"


def tokenizer_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocabulary and merges of the world's tokenizers, kept as data in :data:`BPE_FILE`.

    They were learned once by :func:`learn_tokenizer_files`; the ``tokenizers`` BPE trainer breaks ties
    between equally frequent pairs differently from run to run, so relearning gives other token ids and
    hence another teacher. Reading them from the file is what makes ``scripts/train_world.py`` reproduce the
    shipped weights."""
    import json

    data = json.loads(BPE_FILE.read_text(encoding="utf-8"))
    return dict(data["vocab"]), [tuple(m) for m in data["merges"]]


def learn_tokenizer_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE learned by the ``tokenizers`` trainer on the word list until every word is one token (a trained
    BPE replays its merges in order, so each training word encodes to itself; hand-written merges do not,
    because BPE applies them by global rank). Other lower-case text falls back to letters."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=10_000, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=list("abcdefghijklmnopqrstuvwxyz"), end_of_word_suffix="</w>",
                                  show_progress=False)
    bpe.train_from_iterator(vocabulary(), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = tokenizer_files()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TOKENS)


def text_encoder_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=TOKENS, projection_dim=32,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_act="quick_gelu")


def transformer_config() -> dict:
    return dict(sample_size=IMAGE_SIZE, patch_size=4, in_channels=3, out_channels=3, num_layers=6,
                attention_head_dim=32, num_attention_heads=4, joint_attention_dim=128, caption_projection_dim=128,
                pooled_projection_dim=64, pos_embed_max_size=IMAGE_SIZE // 4, qk_norm="rms_norm")


def new_pipeline(seed: int = 0):
    """A freshly initialised pipeline (transformer seeded by ``seed``, text encoders by :data:`TEXT_SEED`)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    tokenizer = build_tokenizer()
    encoders = []
    for k in range(2):
        torch.manual_seed(TEXT_SEED + k)
        encoders.append(CLIPTextModelWithProjection(text_encoder_config(len(tokenizer))).eval().requires_grad_(False))
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(**transformer_config())
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=SHIFT), vae=None,
        text_encoder=encoders[0], tokenizer=tokenizer, text_encoder_2=encoders[1], tokenizer_2=build_tokenizer(),
        text_encoder_3=None, tokenizer_3=None)


def load_pipeline(folder: str | Path, device="cpu"):
    """The stock ``StableDiffusion3Pipeline.from_pretrained`` on a teacher folder (no remote code).

    The null components must be passed as ``None``: diffusers drops ``[null, null]`` entries of
    ``model_index.json`` and then refuses to build a pipeline whose non-optional components (``vae``,
    ``text_encoder_3``, ``tokenizer_3``) are missing ("expected [...] but only {...} were passed")."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(str(folder), vae=None, text_encoder_3=None, tokenizer_3=None)
    return pipe.to(device)
