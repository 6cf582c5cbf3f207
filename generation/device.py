"""The torch device a ``--device`` option names."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """"auto" (CUDA when present, else the CPU), "cpu", "cuda", "cuda:1" ...; a CUDA device on a
    machine without one is refused (ValueError) rather than failing later inside torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA device here (use --device cpu)")
    return device
