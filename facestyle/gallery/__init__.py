"""Persistent face gallery: SQLite truth, FAISS search, safe under crashes and concurrent writers.

The core (:class:`Gallery` and its results) stores and searches L2-normalised vectors, and with a
face pipeline answers for photos; it does not import torch. :mod:`facestyle.gallery.faces` builds that
pipeline with the gallery's own model (:func:`~facestyle.gallery.faces.open_for_photos`).
"""

from facestyle.gallery.gallery import Gallery, bound_model, gallery_exists, resolve_gallery_path
from facestyle.gallery.results import (
    Candidate,
    Enrollment,
    EnrollResult,
    FaceMatch,
    Identification,
    ImageAnswer,
    Match,
    Verification,
)
from facestyle.gallery.store import IdentityInfo, TemplateInfo, check_name

__all__ = [
    "Candidate",
    "EnrollResult",
    "Enrollment",
    "FaceMatch",
    "Gallery",
    "IdentityInfo",
    "Identification",
    "ImageAnswer",
    "Match",
    "TemplateInfo",
    "Verification",
    "bound_model",
    "check_name",
    "gallery_exists",
    "resolve_gallery_path",
]
