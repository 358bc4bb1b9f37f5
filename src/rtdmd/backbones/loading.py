"""Finding and loading a diffusers pipeline folder: a local folder, or a hub id where a hub is reachable.

Components a folder declares as null in ``model_index.json`` (the embedded world's pixel-space teacher has no
``vae`` and no ``text_encoder_3``) are passed to ``from_pretrained`` as ``None``, which diffusers requires for
non-optional components. Every module is frozen and put in eval mode: trained tensors are LoRA adapters added
afterwards (:mod:`rtdmd.backbones.lora`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from rtdmd.errors import UserError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_folder(path: str) -> Path:
    """A local diffusers folder for ``path``: the folder itself, or the hub snapshot of a repo id (from the local
    cache first, then the hub). Every failure is a one-line :class:`UserError` that says how to fix it."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        if not (folder / "model_index.json").is_file():
            raise UserError(f"backbone.path {path} is a folder without model_index.json: "
                            "point it at a diffusers pipeline folder (the one holding model_index.json)")
        return folder
    if not _HUB_ID.match(path):
        raise UserError(f"backbone.path {path} is neither a local folder nor a hub id like owner/name")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # not in the local cache: try the hub below
        pass
    try:
        return Path(snapshot_download(path))
    except Exception as err:
        raise UserError(
            f"cannot fetch {path} from the Hugging Face hub ({type(err).__name__}): the hub is not reachable "
            f"from here; download the folder elsewhere (huggingface-cli download {path} --local-dir DIR), copy "
            "it here and set backbone.path to DIR") from None


def null_components(folder: Path) -> dict[str, None]:
    """Components declared ``[null, null]`` in ``model_index.json``."""
    index = json.loads((folder / "model_index.json").read_text())
    return {k: None for k, v in index.items() if isinstance(v, list) and v == [None, None]}


def pipeline_class_name(folder: Path) -> str:
    return json.loads((folder / "model_index.json").read_text()).get("_class_name", "")


def pipeline_folder(path: str, pipeline_class: str) -> Path:
    """The folder of ``path`` (see :func:`resolve_folder`), checked to hold a ``pipeline_class`` pipeline. Reads
    JSON only: a config's ``preflight`` calls it before any model loads."""
    folder = resolve_folder(path)
    found = pipeline_class_name(folder)
    if found != pipeline_class:
        raise UserError(f"backbone.path {path} holds a {found or 'unknown'} pipeline, but this backbone kind needs "
                        f"a {pipeline_class} folder: check backbone.kind and backbone.path")
    for name in components(folder):
        if not (folder / name).is_dir():
            raise UserError(f"backbone.path {path} lacks the folder {name}/ that model_index.json lists: "
                            f"download or copy the complete pipeline folder")
        if (folder / name / "config.json").is_file() and not any(
                p.suffix in (".safetensors", ".bin") for p in (folder / name).iterdir()):
            raise UserError(f"backbone.path {path}: {name}/ has a config.json but no weights (.safetensors or "
                            f".bin): the download is incomplete; download or copy the folder again")
    return folder


def components(folder: Path) -> list[str]:
    """The components ``model_index.json`` lists and does not declare null."""
    index = read_config(folder, "model_index.json")
    return [k for k, v in index.items() if isinstance(v, list) and v != [None, None]]


def read_config(folder: Path, name: str) -> dict:
    """A component's JSON config (e.g. ``transformer/config.json``) as a dict ({} when absent)."""
    file = folder / name
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, ValueError) as err:
        raise UserError(f"{file} cannot be read as JSON ({type(err).__name__}): restore the model folder") from None


def from_pretrained(load, folder: Path):
    """``load()``, with a damaged or incomplete model folder reported in one line."""
    try:
        return load()
    except (OSError, ValueError) as err:  # missing or unreadable weight / config files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
        raise UserError(f"cannot load the model in {folder}: {first}; download or copy the folder again") from None


def load_pipeline(pipeline_cls, path: str, *, device: torch.device, dtype: torch.dtype):
    """``pipeline_cls.from_pretrained`` of ``path`` in ``dtype`` on ``device``, every module frozen."""
    folder = pipeline_folder(path, pipeline_cls.__name__)
    pipe = from_pretrained(lambda: pipeline_cls.from_pretrained(folder, dtype=dtype, **null_components(folder)), folder)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.requires_grad_(False)
            module.eval()
    pipe.rtdmd_folder = folder  # where the components came from (export copies them)
    return pipe
