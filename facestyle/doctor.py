"""What `facestyle doctor` reports: enough to answer "why does it not work on this machine"."""

from __future__ import annotations

import platform
from importlib import metadata

from facestyle.models.registry import file_status, list_models
from facestyle.models.weights import facestyle_home, missing_message


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect() -> dict:
    import torch

    from facestyle import __version__
    from facestyle.device import available_devices, native_bfloat16, resolve_device

    models = []
    for spec in list_models():
        for f in file_status(spec):
            models.append(
                {
                    "name": spec.name if len(spec.files) == 1 else f"{spec.name}/{f.file.filename}",
                    "kind": spec.kind,
                    "status": f.status,
                    "path": str(f.path) if f.path else None,
                    "hint": "" if f.status == "ok" else missing_message(spec, f.file),
                }
            )
    return {
        "facestyle": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "numpy": _version("numpy"),
        "faiss": _version("faiss-cpu"),
        "opencv": _version("opencv-python-headless"),
        "h5py": _version("h5py"),
        "dlib (tests only)": _version("dlib-bin"),
        "device": str(resolve_device()),
        "devices": available_devices(),
        "cuda": torch.cuda.is_available(),
        "cpu_bfloat16": native_bfloat16(),
        "threads": torch.get_num_threads(),
        "home": str(facestyle_home()),
        "models": models,
    }
