"""Which device to compute on, and the name results record for it."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when it is available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device | str | None = None) -> str:
    """The GPU's name (e.g. 'NVIDIA H100 80GB HBM3'), or 'cpu': what results record."""
    device = torch.device(device) if device else default_device()
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
