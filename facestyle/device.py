"""Pick the compute device once, the same way everywhere."""

from __future__ import annotations

import os

import torch


def default_device(requested: str | None = None) -> torch.device:
    """CUDA when present, else CPU; ``requested`` (or ``FACESTYLE_DEVICE``) overrides."""
    name = requested or os.environ.get("FACESTYLE_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
