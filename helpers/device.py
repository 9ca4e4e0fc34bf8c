"""Which device to compute on, and the name results record for it."""

from __future__ import annotations

import platform

import torch


def default_device() -> torch.device:
    """CUDA when it is available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str | None = None) -> str:
    """The GPU's name (e.g. 'NVIDIA H100 80GB HBM3'), or 'cpu': what results record."""
    device = torch.device(device) if device else default_device()
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def cpu_model() -> str:
    """The CPU's "model name" (/proc/cpuinfo, else platform.processor()): what a timing ran on."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"
