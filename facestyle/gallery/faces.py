"""Photos in, gallery answers out: the glue between :class:`FacePipeline` and :class:`Gallery`.

Kept apart from :mod:`facestyle.gallery.gallery` so that the gallery core (and ``facestyle gallery
list``) never imports torch. Every function returns plain dicts in the documented ``--json`` shape::

    {"image": str, "status": "ok" | "no_face" | "error", "faces": [
        {"box": [x1, y1, x2, y2], "identity": str | None, "score": float | None,
         "candidates": [{"name": str, "score": float}, ...]}], "error": str (only on error)}

Choices the issue left open: ``verify`` uses the largest face of the probe photo (the claimed person
is normally the subject of the photo, as in ``facestyle compare``); ``identify`` answers for every face.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facestyle.errors import FacestyleError, NoFaceError
from facestyle.gallery.gallery import Gallery, Match
from facestyle.io.images import load_image

if TYPE_CHECKING:
    from facestyle.api import FacePipeline


def open_gallery(path: str | os.PathLike[str] | None, pipeline: FacePipeline, **kwargs: Any) -> Gallery:
    """Open (or create) a gallery bound to ``pipeline``'s embedder; a different model is refused."""
    emb = pipeline.embedder
    return Gallery.open(
        path,
        model=emb.name,
        dim=emb.embedding_size,
        model_version=getattr(emb, "version", None) or None,
        default_threshold=emb.default_threshold,
        **kwargs,
    )


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _box(face: Any) -> list[float]:
    return [round(float(v), 1) for v in np.asarray(face.box).ravel()[:4]]


def _detector_name(pipeline: FacePipeline) -> str | None:
    return getattr(pipeline.detector, "name", None)


def enroll_image(
    gallery: Gallery, name: str, path: str | os.PathLike[str], pipeline: FacePipeline, largest: bool = False
) -> dict:
    """Enroll the one face in ``path`` under ``name``.

    Raises :class:`NoFaceError`, :class:`SeveralFacesError` (unless ``largest``) or :class:`ImageError`;
    the result dict adds ``template_id`` and ``duplicate`` to the usual per-image shape.
    """
    image = load_image(path)
    face = pipeline.face(image, largest=largest, label=str(path))
    result = gallery.enroll(
        name,
        face.embedding,
        image_sha256=file_sha256(path),
        source=Path(path).name,
        detector=_detector_name(pipeline),
        boxes=[face.box],
    )
    return {
        "image": str(path),
        "status": "ok",
        "faces": [{"box": _box(face), "identity": result.name, "score": None, "candidates": []}],
        "template_id": result.template_ids[0] if result.template_ids else None,
        "duplicate": result.duplicate,
    }


def verify_image(
    gallery: Gallery,
    name: str,
    path: str | os.PathLike[str],
    pipeline: FacePipeline,
    threshold: float | None = None,
) -> dict:
    """Is the (largest) face in ``path`` the enrolled ``name``? Adds ``match`` and ``threshold``."""
    thr = gallery.resolve_threshold(threshold)
    if name not in gallery:
        gallery.show(name)  # raises the "not enrolled" GalleryError
    image = load_image(path)
    faces = pipeline.faces(image)
    if not faces:
        raise NoFaceError(f"{path}: no face found")
    face = max(faces, key=lambda f: f.area)
    score = gallery.verify(name, face.embedding)
    match = score >= thr
    return {
        "image": str(path),
        "status": "ok",
        "faces": [
            {
                "box": _box(face),
                "identity": name if match else None,
                "score": round(score, 6),
                "candidates": [{"name": name, "score": round(score, 6)}],
            }
        ],
        "claimed": name,
        "match": match,
        "threshold": thr,
    }


def _face_answer(face: Any, match: Match) -> dict:
    return {
        "box": _box(face),
        "identity": match.identity,
        "score": None if match.score is None else round(match.score, 6),
        "candidates": [{"name": c.name, "score": round(c.score, 6)} for c in match.candidates],
    }


def identify_images(
    gallery: Gallery,
    paths: Sequence[str | os.PathLike[str]],
    pipeline: FacePipeline,
    top_k: int = 5,
    threshold: float | None = None,
) -> Iterator[dict]:
    """One answer dict per image, in order, for every face in it; bad images are reported, not fatal."""
    thr = gallery.resolve_threshold(threshold)
    for result in pipeline.embed_files([str(p) for p in paths]):
        answer: dict = {"image": result.path, "status": result.status, "faces": []}
        if result.status == "error":
            answer["error"] = result.error
        elif result.faces:
            try:
                matches = gallery.identify(
                    np.stack([f.embedding for f in result.faces]), top_k=top_k, threshold=thr
                )
            except FacestyleError as exc:
                answer.update(status="error", error=str(exc))
            else:
                answer["faces"] = [_face_answer(f, m) for f, m in zip(result.faces, matches, strict=True)]
        yield answer
