"""The options every command that opens a gallery shares (``enroll``, ``verify``, ``identify``,
``gallery ...``, ``enroll-dir``): one definition, so their wording and parsing cannot drift apart."""

from __future__ import annotations

import typer


def gallery_location(value: str) -> str:
    """``--gallery`` as given: a directory, or a ``postgresql://`` URL (a Path would fold its ``//``)."""
    return value


GalleryOpt = typer.Option(
    None,
    "--gallery",
    "-g",
    help="Gallery: a directory, or postgresql://user@host:5432/db?gallery=NAME (PostgreSQL + pgvector; "
    "password from ~/.pgpass or $PGPASSWORD). Default: $FACESTYLE_GALLERY, else ./gallery.",
    show_default=False,
    parser=gallery_location,
    metavar="DIR|URL",
    readable=False,  # where a command still annotates it as a Path, typer must not check it
)
ModelOpt = typer.Option(
    None,
    "--model",
    "-m",
    help="Embedder (default: the gallery's model; dlib-resnet-v1 for a new gallery).",
    show_default=False,
)
DetectorOpt = typer.Option("mtcnn", "--detector", "-d", help="mtcnn (landmarks) or haar (fast, box only).")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA when present).")
