"""facestyle: offline face recognition and neural style transfer.

The Python API is the product; the CLI only parses and formats. Everything here is importable
without the CLI::

    from facestyle import FacePipeline, Gallery, Classifier, stylize, StyleOptions, compare

Names are resolved lazily so that ``import facestyle`` (and ``facestyle --help``) does not pay for
importing torch until a model is actually used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # faces
    "Comparison": "facestyle.api",
    "Face": "facestyle.detect.faces",
    "FacePipeline": "facestyle.api",
    "ImageResult": "facestyle.api",
    "compare": "facestyle.api",
    "cosine_similarity": "facestyle.api",
    "default_pipeline": "facestyle.api",
    "detect_faces": "facestyle.api",
    "face_embeddings": "facestyle.api",
    "save_face_chips": "facestyle.api",
    "load_embedder": "facestyle.embed.loader",
    # the gallery
    "Gallery": "facestyle.gallery.gallery",
    "open_for_photos": "facestyle.gallery.faces",
    # style
    "StyleOptions": "facestyle.style.options",
    "stylize": "facestyle.style.transfer",
    # heads
    "Classifier": "facestyle.heads.classify",
    # models by name
    "backbone": "facestyle.models.registry",
    "list_models": "facestyle.models.registry",
    # files and errors
    "FacestyleError": "facestyle.errors",
    "ParameterError": "facestyle.errors",
    "load_image": "facestyle.io.images",
    "save_image": "facestyle.io.images",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'facestyle' has no attribute {name!r}")
