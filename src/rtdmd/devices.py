"""Devices and dtypes by name, in one place (the config's ``run.device`` and ``run.dtype``)."""

import torch

from rtdmd.errors import UserError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


def resolve_device(device: str, local_rank: int = 0, key: str = "run.device") -> torch.device:
    """``auto``: this rank's GPU if CUDA is available, else the CPU; ``cuda`` without an index: this rank's GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"{key} {device!r} is not a torch device: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{key} is {device!r} but CUDA is not available here: use {key}=auto or cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev
