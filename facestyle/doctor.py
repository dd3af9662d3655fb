"""What `facestyle doctor` reports: enough to answer "why does it not work on this machine"."""

from __future__ import annotations

import platform
from importlib import metadata

from facestyle.models.registry import list_models
from facestyle.models.weights import facestyle_home, missing_message, status


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def collect() -> dict:
    import torch

    from facestyle import __version__
    from facestyle.device import default_device, native_bfloat16

    models = []
    for spec in list_models():
        for wf, path, state in status(spec):
            models.append(
                {
                    "name": spec.name if len(spec.files) == 1 else f"{spec.name}/{wf.filename}",
                    "kind": spec.kind,
                    "status": state,
                    "path": str(path) if path else None,
                    "hint": "" if state == "ok" else missing_message(spec, wf),
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
        "dlib (tests only)": _version("dlib-bin"),
        "device": str(default_device()),
        "cuda": torch.cuda.is_available(),
        "cpu_bfloat16": native_bfloat16(),
        "threads": torch.get_num_threads(),
        "home": str(facestyle_home()),
        "models": models,
    }
