"""Persistent face gallery: SQLite truth, FAISS search, safe under crashes and concurrent writers.

The core (:class:`Gallery`) stores and searches L2-normalised vectors and does not import torch;
:mod:`facestyle.gallery.faces` connects it to :class:`facestyle.api.FacePipeline` for photos.
"""

from facestyle.gallery.gallery import (
    Candidate,
    EnrollResult,
    Gallery,
    Match,
    resolve_gallery_path,
)
from facestyle.gallery.store import IdentityInfo, TemplateInfo, check_name

__all__ = [
    "Candidate",
    "EnrollResult",
    "Gallery",
    "IdentityInfo",
    "Match",
    "TemplateInfo",
    "check_name",
    "resolve_gallery_path",
]
