"""Export a trained generator so that stock diffusers runs it.

- :func:`export_lora`: the generator's adapter(s) as ONE LoRA in diffusers' format
  (``pytorch_lora_weights.safetensors``, keys ``transformer.<module>.lora_A.weight``), loadable with
  ``pipe.load_lora_weights(dir)``. After stage 2 the generator is the frozen stage-1 adapter plus the stage-2
  adapter; they are concatenated along the rank (``A = [A1; A2]``, ``B = [s1 B1, s2 B2]``) so that ``B A`` is the
  sum of both updates exactly, with the LoRA's own scale 1 (alpha = rank). The folder also holds the CPS
  scheduler (``scheduler/``) to sample with.
- :func:`export_merged`: a standalone diffusers folder: the generator merged into its base transformer, the other
  components copied from the source folder, and :class:`rtdmd.scheduler.CPSScheduler` as the scheduler
  (``model_index.json`` names it ``["rtdmd.scheduler", "CPSScheduler"]``: ``import rtdmd.scheduler`` before
  ``from_pretrained``).

Both work on a diffusers backbone object (``roles``, ``pipe``, ``generator_folder``, ``cps_scheduler_config``),
so the ``rtdmd export`` command only loads a run and calls them. Both refuse a folder that is not new or empty,
and write ``rtdmd_export.json``: the base, the pipeline, the sampler, and under ``source`` the run, stage, step,
checkpoint and checkpoint sha256 the weights came from.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rtdmd.errors import UserError
from rtdmd.functional.schedules import DENOISING_STEP_LIST
from rtdmd.scheduler import CPSScheduler

LORA_FILE = "pytorch_lora_weights.safetensors"


def _require_diffusers_backbone(backbone) -> None:
    if not all(hasattr(backbone, a) for a in ("roles", "pipe", "generator_folder", "cps_scheduler_config")):
        raise UserError(f"export needs a diffusers backbone (sd3, flux1, flux2_klein); this run's backbone is "
                        f"{type(backbone).__name__}")


def cps_scheduler(backbone, eta: float = 0.9, step_list: Sequence[int] = DENOISING_STEP_LIST):
    """The CPS scheduler that samples ``backbone``'s generator levels with ``eta``."""
    return CPSScheduler(denoising_step_list=tuple(int(s) for s in step_list), eta=float(eta),
                        **backbone.cps_scheduler_config())


def _require_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"export folder {out} is {'a file' if not out.is_dir() else 'not empty'}: choose a new --out "
                        "folder")


def export_record(backbone, eta: float, step_list: Sequence[int], provenance: Mapping[str, Any] | None) -> dict:
    """``rtdmd_export.json``: the base model, the sampler, and the run and checkpoint the weights came from."""
    return {"base": str(backbone.generator_folder), "pipeline": type(backbone.pipe).__name__, "eta": eta,
            "denoising_step_list": list(step_list), "source": dict(provenance or {})}


def export_lora(backbone, out_dir: str | Path, *, eta: float = 0.9,
                step_list: Sequence[int] = DENOISING_STEP_LIST, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write the generator's LoRA (diffusers format) and the CPS scheduler config to ``out_dir`` (new or empty)."""
    _require_diffusers_backbone(backbone)
    out = Path(out_dir)
    _require_empty(out)
    tensors, rank = backbone.roles.combined_lora("generator")
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in tensors})
    metadata = {"r": rank, "lora_alpha": rank, "target_modules": modules}
    # float32 like the trained tensors; loading casts them to the pipeline's dtype.
    type(backbone.pipe).save_lora_weights(
        out, transformer_lora_layers={k: v.float().contiguous() for k, v in tensors.items()},
        transformer_lora_adapter_metadata=metadata, weight_name=LORA_FILE)
    cps_scheduler(backbone, eta, step_list).save_pretrained(out / "scheduler")
    record = {**export_record(backbone, eta, step_list, provenance), "rank": rank}
    (out / "rtdmd_export.json").write_text(json.dumps(record, indent=2))
    return out


def merged_transformer(backbone):
    """A plain transformer (no adapter wrappers) of the generator's base with its adapters merged."""
    base = backbone.roles.bases["generator"]
    state = backbone.roles.merged_state_dict("generator")
    with torch.device("meta"):
        model = type(base).from_config(base.config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def export_merged(backbone, out_dir: str | Path, *, eta: float = 0.9,
                  step_list: Sequence[int] = DENOISING_STEP_LIST, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a standalone diffusers folder (new or empty): merged generator transformer, CPS scheduler, other
    components copied, and ``rtdmd_export.json``."""
    _require_diffusers_backbone(backbone)
    out = Path(out_dir)
    _require_empty(out)
    source = Path(backbone.pipe.rtdmd_folder)
    index = json.loads((source / "model_index.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name, entry in index.items():
        if name in ("transformer", "scheduler") or not isinstance(entry, list) or entry == [None, None]:
            continue
        if (source / name).is_dir():
            shutil.copytree(source / name, out / name)  # symlinks of a hub cache are followed
    merged_transformer(backbone).save_pretrained(out / "transformer", safe_serialization=True)
    cps_scheduler(backbone, eta, step_list).save_pretrained(out / "scheduler")
    index["scheduler"] = ["rtdmd.scheduler", "CPSScheduler"]
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    (out / "rtdmd_export.json").write_text(json.dumps(export_record(backbone, eta, step_list, provenance), indent=2))
    return out
