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


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX).

    Only then does oneDNN run a bfloat16 convolution at about twice its float32 speed (measured on an
    AVX512-BF16 EPYC, docs/style.md); on other CPUs bfloat16 is emulated and slower than float32, so
    callers use it to decide whether reduced precision on the CPU is worth offering at all. The probes
    are torch's own (private, hence looked up defensively: a torch without them answers False).
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
