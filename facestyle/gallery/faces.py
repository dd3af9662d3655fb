"""A gallery opened for photos: the face pipeline built with the gallery's own model.

The one module of the gallery that imports :mod:`facestyle.api` (and so torch). The rule for which
embedder a gallery is used with lives here, once:

1. the model asked for, if any; a gallery bound to another model refuses it *before* any network
   is loaded (a one-line :class:`GalleryError`);
2. else the model the existing gallery is bound to;
3. else :data:`DEFAULT_MODEL`.

>>> with open_for_photos("my-gallery") as g:          # doctest: +SKIP
...     g.enroll_image("alice", "alice.jpg")
...     g.identify_image("probe.jpg").to_dict()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facestyle.api import FacePipeline
from facestyle.detect.faces import Detector
from facestyle.detect.finding import check_crop
from facestyle.gallery.gallery import (
    Gallery,
    bound_model,
    gallery_exists,
    model_mismatch,
    no_gallery_here,
    resolve_gallery_path,
)
from facestyle.models.registry import MODELS

#: The embedder of a new gallery when no model is asked for.
DEFAULT_MODEL = "dlib-resnet-v1"


def model_name(model: str | os.PathLike[str]) -> str:
    """The name an embedder gets when loaded (what a gallery stores): a registry name as is, a
    checkpoint file as its absolute path (so ``model.pt`` and ``./model.pt`` are the same model)."""
    name = os.fspath(model)
    if name in MODELS:
        return name
    if name.endswith((".pt", ".pth")) or Path(name).is_file():
        return str(Path(name).expanduser().resolve())
    return name


def model_for(path: str | os.PathLike[str] | None = None, model: str | os.PathLike[str] | None = None) -> str:
    """The embedder to use with the gallery at ``path``: ``model``, else the gallery's, else
    :data:`DEFAULT_MODEL`. A ``model`` other than the one the gallery is bound to is refused with a
    :class:`GalleryError`. Reads the gallery's metadata only: no index, no network."""
    have = bound_model(path)
    if model is None:
        return have or DEFAULT_MODEL
    want = model_name(model)
    if have is not None and want != have:
        raise model_mismatch(resolve_gallery_path(path), have, want)
    return want


def open_for_photos(
    path: str | os.PathLike[str] | None = None,
    *,
    model: str | os.PathLike[str] | None = None,
    detector: str | os.PathLike[str] | Detector = "mtcnn",
    device: str | None = None,
    crop: str = "auto",
    create: bool = True,
    read_only: bool = False,
    **kwargs: Any,
) -> Gallery:
    """Open (with ``create``, make) the gallery at ``path`` with a :class:`FacePipeline` on the model
    chosen by :func:`model_for`, ready for ``enroll_image``, ``verify_image`` and ``identify_image(s)``.

    A missing gallery (without ``create``, or ``read_only``) and a refused ``model`` fail before any
    network is loaded. ``crop`` is the pipeline's face-finding policy (``detect``, ``auto`` or
    ``whole``: :class:`~facestyle.api.FacePipeline`). ``kwargs`` go to :meth:`Gallery.open`
    (``autosave``, ``default_threshold``, ``on_note``).
    """
    gpath = resolve_gallery_path(path)
    if (read_only or not create) and not gallery_exists(gpath):
        raise no_gallery_here(gpath)
    check_crop(crop)
    pipeline = FacePipeline(model_for(gpath, model), detector, device=device, crop=crop)  # type: ignore[arg-type]
    return Gallery.open(gpath, pipeline=pipeline, create=create, read_only=read_only, **kwargs)
