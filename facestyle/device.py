"""Pick the compute device once, the same way everywhere, and refuse one this machine does not have.

A device named by the user (``device=``/``--device`` or ``FACESTYLE_DEVICE``) is checked here, before
any model is built: a missing GPU is a one-line error listing what is available, not a PyTorch
traceback minutes later.
"""

from __future__ import annotations

import os

import torch

from facestyle.errors import ParameterError

ENV = "FACESTYLE_DEVICE"


def available_devices() -> list[str]:
    """The devices facestyle can run on here: ``cpu`` and each CUDA GPU."""
    return [
        "cpu",
        *(f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)),
    ]


def resolve_device(requested: str | torch.device | None = None) -> torch.device:
    """CUDA when present, else CPU; ``requested`` (or ``$FACESTYLE_DEVICE``) overrides, if it exists."""
    if isinstance(requested, torch.device):
        return requested
    name = requested or os.environ.get(ENV)
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    have = available_devices()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ParameterError(
            "{device} is not a device name; available here: " + ", ".join(have), device=name
        ) from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "cuda":
        index = device.index or 0
        if f"cuda:{index}" in have:
            return torch.device("cuda", index)
    raise ParameterError(
        "{device} is not available on this machine; available here: " + ", ".join(have), device=name
    )


def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX).

    Only then does oneDNN run a bfloat16 convolution at about twice its float32 speed (measured on an
    AVX512-BF16 EPYC, docs/style.md); on other CPUs bfloat16 is emulated and slower than float32, so
    callers use it to decide whether reduced precision on the CPU is worth offering at all. The probes
    are torch's own (private, hence looked up defensively: a torch without them answers False).
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
