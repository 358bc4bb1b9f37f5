"""What a benchmark ran on: CPU, cores, threads, library versions and the load from other processes."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> str:
    """The 1-, 5- and 15-minute load averages (runnable processes; above the core count means sharing)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def describe(device: torch.device) -> dict[str, str]:
    versions = {name: metadata.version(name) for name in ("torch", "diffusers", "transformers", "peft")}
    out = {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "python": platform.python_version(),
        **versions,
    }
    return out
