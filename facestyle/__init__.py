"""facestyle: offline face recognition and neural style transfer.

The face API is importable without the CLI::

    from facestyle import FacePipeline, compare, load_image

Names are resolved lazily so that ``import facestyle`` (and ``facestyle --help``) does not pay for
importing torch until a model is actually used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Comparison": "facestyle.api",
    "Face": "facestyle.api",
    "FacePipeline": "facestyle.api",
    "ImageResult": "facestyle.api",
    "compare": "facestyle.api",
    "cosine_similarity": "facestyle.api",
    "default_pipeline": "facestyle.api",
    "detect_faces": "facestyle.api",
    "face_embeddings": "facestyle.api",
    "FacestyleError": "facestyle.errors",
    "load_image": "facestyle.io.images",
    "Gallery": "facestyle.gallery",
    "stylize": "facestyle.style.transfer",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facestyle' has no attribute {name!r}")
