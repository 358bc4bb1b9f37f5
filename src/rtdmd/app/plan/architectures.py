"""Models without weights: a backbone and its rewards built from configuration files alone, for planning
(:mod:`rtdmd.app.plan`) and for the GPU benchmark (random weights at the published sizes).

- :func:`architecture_folder`: where a model's configs come from: ``backbone.path`` when it is a local diffusers
  folder, else the published configs shipped in ``rtdmd/assets/architectures/<hub id>`` (no download).
- :func:`configs_only`: a context in which the backbone builders of :mod:`rtdmd.backbones` load such a folder
  (``loading.resolve_folder``, ``load_pipeline``, ``from_pretrained`` answer from the configs), so the real
  builder and the real backbone class run; modules are created on ``device``: ``meta`` for planning, a GPU for
  the random-weight benchmark (initialised there, as their constructors initialise them).
- :func:`fake_tensors`: the modules' parameters and buffers become fake tensors (no memory) for planning.
- :class:`StubTokenizer`: planning has no tokenizer files for the published models; every text encoder here reads
  prompts padded to a fixed length, so the shapes (all that planning needs) do not depend on the text.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rtdmd.errors import UserError

SHIPPED = Path(__file__).resolve().parents[2] / "assets" / "architectures"


def architecture_folder(path: str) -> Path:
    """The folder whose configs describe ``path``: a local diffusers folder, or the shipped published configs."""
    local = Path(path).expanduser()
    if (local / "model_index.json").is_file() or (local / "config.json").is_file():
        return local
    shipped = SHIPPED / path
    if (shipped / "model_index.json").is_file() or (shipped / "config.json").is_file():
        return shipped
    known = sorted(str(p.parent.relative_to(SHIPPED)) for p in SHIPPED.rglob("model_index.json"))
    raise UserError(f"rtdmd plan needs the configs of {path}: point it at a local diffusers folder (only its JSON "
                    f"files are read), or use a published model ({', '.join(known)})")


def read_json(file: Path) -> dict:
    return json.loads(file.read_text()) if file.is_file() else {}


class StubTokenizer:
    """A tokenizer that turns every prompt into ``max_length`` (or ``model_max_length``) tokens of id 0."""

    def __init__(self, model_max_length: int):
        self.model_max_length = model_max_length

    def __call__(self, text, padding=None, max_length=None, return_tensors=None, **kwargs):
        from transformers import BatchEncoding

        texts = [text] if isinstance(text, str) else list(text)
        ids = torch.zeros(len(texts), max_length or self.model_max_length, dtype=torch.long)
        return BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})

    def apply_chat_template(self, messages, tokenize=False, **kwargs) -> str:
        return " ".join(m["content"] for m in messages)

    def batch_decode(self, ids, **kwargs) -> list[str]:
        return [""] * len(ids)

    def tokenize(self, text: str, **kwargs) -> list[str]:  # textual-inversion lookups find nothing
        return []

    @property
    def added_tokens_encoder(self) -> dict:
        return {}

    def __len__(self) -> int:
        return 1


def tokenizer(folder: Path, library: str, class_name: str):
    """The real tokenizer when the folder has its files (a local pipeline), else :class:`StubTokenizer`."""
    config = read_json(folder / "tokenizer_config.json")
    if any(f.name not in ("tokenizer_config.json",) for f in folder.glob("*")):
        import transformers

        return getattr(transformers, class_name).from_pretrained(str(folder))
    return StubTokenizer(int(config.get("model_max_length", 512)))


Transform = Callable[[dict], dict]


def same(config: dict) -> dict:
    return config


def component(folder: Path, library: str, class_name: str, dtype: torch.dtype, device: torch.device,
              transform: Transform = same):
    """One pipeline component from its config (after ``transform``, e.g. fewer layers for a quick benchmark),
    created on ``device`` (models in ``dtype``)."""
    import importlib

    cls = getattr(importlib.import_module(library), class_name)
    if "Tokenizer" in class_name:
        return tokenizer(folder, library, class_name)
    if hasattr(cls, "from_config") and not issubclass(cls, nn.Module):  # a diffusers scheduler
        return cls.from_config(read_json(folder / "scheduler_config.json"))
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # created in dtype: a float32 copy of a 12B model would not fit a GPU
    try:
        with torch.device(device):
            if library == "diffusers":
                model = cls.from_config(transform(dict(cls.load_config(str(folder)))))
            else:
                model = cls(cls.config_class.from_dict(transform(read_json(folder / "config.json"))))
    finally:
        torch.set_default_dtype(default)
    return model.to(dtype).requires_grad_(False).eval()


def pipeline(pipeline_cls, folder: Path, dtype: torch.dtype, device: torch.device, transform: Transform = same):
    """``pipeline_cls`` assembled from the components ``model_index.json`` lists, each from its config."""
    index = read_json(folder / "model_index.json")
    parts: dict[str, Any] = {}
    for name, value in index.items():
        if name.startswith("_"):
            continue
        if isinstance(value, list) and len(value) == 2:
            parts[name] = None if value == [None, None] else component(folder / name, *value, dtype, device,
                                                                       transform)
        else:
            parts[name] = value  # a plain pipeline argument (klein's is_distilled)
    pipe = pipeline_cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    pipe.rtdmd_folder = folder
    return pipe


@contextlib.contextmanager
def configs_only(dtype: torch.dtype, device: torch.device | str = "meta", transform: Transform = same) -> Iterator[None]:
    """The backbone builders load pipelines and transformers from configs alone, created on ``device``."""
    from rtdmd.backbones import loading

    create_on = device

    def resolve_folder(path: str) -> Path:
        return architecture_folder(path)

    def load_pipeline(pipeline_cls, path: str, *, device, dtype):  # the run's device: created on ``create_on``
        return pipeline(pipeline_cls, architecture_folder(path), dtype, create_on, transform)

    def from_pretrained(load, folder: Path):
        config = read_json(Path(folder) / "transformer" / "config.json")
        module = component(Path(folder) / "transformer", "diffusers", config["_class_name"], dtype, create_on,
                           transform)
        if torch.device(create_on).type == "meta":  # the builder moves it to the run's device: stay on meta
            module.to = lambda *args, **kwargs: module
        return module

    saved = loading.resolve_folder, loading.load_pipeline, loading.from_pretrained
    loading.resolve_folder, loading.load_pipeline, loading.from_pretrained = resolve_folder, load_pipeline, from_pretrained
    try:
        yield
    finally:
        loading.resolve_folder, loading.load_pipeline, loading.from_pretrained = saved


def fake_tensors(modules, mode, device: torch.device) -> None:
    """Replace every parameter and buffer of ``modules`` (meta tensors) by a fake tensor of the same shape and
    dtype on ``device``, created under ``mode`` (a FakeTensorMode). Parameter objects are replaced, not moved:
    ``Module.to`` cannot swap fake tensors in place."""
    with mode:
        for module in {id(m): m for top in modules for m in top.modules()}.values():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device=device),
                                                            requires_grad=p.requires_grad)
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = torch.empty(b.shape, dtype=b.dtype, device=device)


class NoScore:
    """A reward scored elsewhere or without gradient and without a model here (a reward server): zeros. ``note``
    says why, for the plan's report."""

    differentiable = False

    def __init__(self, note: str = ""):
        self.note = note

    def __call__(self, images, prompts, metadata=None):
        return torch.zeros(images.shape[0], device=images.device)


def reward_model(params, device: torch.device | str, transform: Transform = same):
    """A reward entry's model for planning or a random-weight benchmark: a CLIP-family reward (its config class
    names its ``published_clip``) is the CLIP cosine of that architecture (its local ``path`` when that holds a
    ``config.json``), in the entry's dtype; a reward without gradient and without ``published_clip`` scores zeros
    (its cost is elsewhere: a server, whose config class says ``served``); any other kind is built as in a
    run."""
    from rtdmd import registry
    from rtdmd.devices import torch_dtype
    from rtdmd.rewards.clip import ClipCosine, ClipEmbedder
    from rtdmd.rewards.clip_preprocess import ClipPreprocess
    from rtdmd.rewards.loading import ScorerInfo

    architecture = getattr(type(params), "published_clip", None)
    if getattr(type(params), "served", False):
        return NoScore(f"{params.kind}: scored by another process, no model on this GPU")
    if architecture is None:
        try:
            built = registry.builder("reward", params.kind)(params, world=None, device=device)
        except UserError as err:  # e.g. a reward server that is not running here
            return NoScore(f"{params.kind}: not built here ({str(err).split(':')[0]}); planned as costing nothing "
                           "on this GPU")
        return built if built.differentiable else NoScore(f"{params.kind}: no gradient and no model here")
    path = getattr(params, "path", None)
    folder = Path(path).expanduser() if path and (Path(path).expanduser() / "config.json").is_file() else None
    folder = folder or architecture_folder(architecture)
    model = component(folder, "transformers", "CLIPModel", torch_dtype(getattr(params, "dtype", "fp32")), device,
                      transform)
    preprocess = ClipPreprocess.from_folder(folder, model.config.vision_config.image_size)
    embedder = ClipEmbedder(model, tokenizer(folder, "transformers", "CLIPTokenizer"), preprocess)
    return ClipCosine(embedder, ScorerInfo(params.kind, f"{architecture} without weights"))
