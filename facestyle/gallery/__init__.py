"""Persistent face gallery, safe under crashes and concurrent writers, on one of two backends: a
directory (SQLite truth, FAISS search; the default) or PostgreSQL + pgvector (``postgresql://`` URLs).

The core (:class:`Gallery` and its results) stores and searches L2-normalised vectors, and with a
face pipeline answers for photos; it does not import torch. :mod:`facestyle.gallery.faces` builds that
pipeline with the gallery's own model (:func:`~facestyle.gallery.faces.open_for_photos`).
"""

from facestyle.gallery.base import Gallery, bound_model, gallery_exists, resolve_location
from facestyle.gallery.gallery import DirectoryGallery, resolve_gallery_path
from facestyle.gallery.postgres import PostgresGallery
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
    "DirectoryGallery",
    "EnrollResult",
    "Enrollment",
    "FaceMatch",
    "Gallery",
    "IdentityInfo",
    "Identification",
    "ImageAnswer",
    "Match",
    "PostgresGallery",
    "TemplateInfo",
    "Verification",
    "bound_model",
    "check_name",
    "gallery_exists",
    "resolve_gallery_path",
    "resolve_location",
]
