"""Copy a gallery to another location, across backends: a directory to PostgreSQL and back.

What is copied: every identity (name and dates), every template with its vector and metadata (photo
hash, source, detector, box, how the face was found, date), the model binding (model, embedding size,
weights version) and a stored threshold. What is not: template ids (each backend numbers its own) and
the directory backend's index file (rebuilt from the copy). The source is only read.

The destination is opened with the source's model, so a destination bound to another model (or other
weights) is refused before anything is written. Into a destination of the same model the copy merges:
a name already there gets the templates it lacks, and a template is skipped when its name already has
one with the same vector, so copying twice adds nothing. The templates go in one transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

from facestyle.errors import GalleryError
from facestyle.gallery.base import Gallery, resolve_location


@dataclass(frozen=True)
class MigrateReport:
    """What ``facestyle gallery migrate --json`` prints."""

    source: str
    destination: str
    source_backend: str
    destination_backend: str
    model: str | None
    dim: int | None
    model_version: str | None
    identities: int
    templates: int
    templates_added: int
    threshold: float | None
    threshold_source: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def migrate(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    on_note: Callable[[str], None] | None = None,
) -> MigrateReport:
    """Copy the gallery at ``source`` into ``destination`` (created if missing); see the module."""
    if str(resolve_location(source)) == str(resolve_location(destination)):
        raise GalleryError(f"{resolve_location(source)}: the source and the destination are the same gallery")
    with Gallery.open(source, create=False, read_only=True, stranger_rate=None, on_note=on_note) as src:
        model, dim, version = src.model, src.dim, src.model_version
        identities, templates = src.export_records()
        stored = src.stored_threshold()
        src_path, src_backend = str(src.path), src.backend
    with Gallery.open(destination, model=model, dim=dim, model_version=version, on_note=on_note) as dst:
        added = dst.import_records(identities, templates) if identities or templates else 0
        if stored is not None:
            dst.set_threshold(*stored)
        return MigrateReport(
            source=src_path,
            destination=str(dst.path),
            source_backend=src_backend,
            destination_backend=dst.backend,
            model=model,
            dim=dim,
            model_version=version,
            identities=len(identities),
            templates=len(templates),
            templates_added=added,
            threshold=None if stored is None else stored[0],
            threshold_source=None if stored is None else stored[1],
        )
