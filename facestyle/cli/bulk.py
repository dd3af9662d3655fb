"""Bulk enrollment commands: ``enroll-dir PEOPLE/`` and ``enroll --from-csv FILE``.

Both parse options, read the input (before any model is loaded) and call
:mod:`facestyle.gallery.bulk`. Photos that are not enrolled are reported on stderr as they are met
and the run goes on; stdout gets one summary line, or with ``--json`` one JSON object per photo as it
is done, then ``{"summary": {...}}``. Exit 0 when every photo is enrolled or already was, else the
most serious per-photo code (3 no face, 2 several faces or a bad CSV row, 5 unreadable photo);
6 when the gallery itself fails (what was reported stays enrolled).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from facestyle.cli._common import (
    CropOpt,
    JsonOpt,
    QuietOpt,
    err_warn,
    item_error,
    note,
    out,
    print_json,
    progress_fn,
    user_errors,
)
from facestyle.cli.gallery_options import DetectorOpt, DeviceOpt, GalleryOpt, ModelOpt

LargestOpt = typer.Option(False, "--largest", help="Enroll the largest face of a photo with several.")
WorkersOpt = typer.Option(
    None,
    "--workers",
    help="Processes decoding photos and finding faces (0: this one; default: one per core, at most 2).",
    show_default=False,
)
BatchSizeOpt = typer.Option(32, "--batch-size", help="Aligned faces embedded together.")


def enroll_dir(
    people: Path = typer.Argument(
        ...,
        metavar="PEOPLE",
        help="A folder with one folder per person (its name) of photos.",
        readable=False,
    ),
    largest: bool = LargestOpt,
    gallery: str | None = GalleryOpt,
    model: str | None = ModelOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    device: str | None = DeviceOpt,
    workers: int | None = WorkersOpt,
    batch_size: int = BatchSizeOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Enroll PEOPLE/<name>/<photo>: every photo of every person, one face each, resumably.

    A photo already enrolled under its name (same file content) is skipped before it is read, so an
    interrupted run is finished by running it again. Photos without a face, with several faces
    (without --largest) or unreadable are reported and the run goes on (docs/bulk-enrollment.md)."""
    with user_errors():
        from facestyle.gallery.bulk import check_bulk_options, people_folder

        check_bulk_options(workers, batch_size)
        specs = people_folder(people)
        _run(specs, largest, gallery, model, detector, crop, device, workers, batch_size, json, quiet)


def enroll_csv(
    csv_file: Path,
    *,
    name: str | None,
    images: list[Path],
    new: bool,
    add: bool,
    largest: bool,
    gallery: str | Path | None,
    model: str | None,
    detector: str,
    crop: str,
    device: str | None,
    workers: int | None,
    batch_size: int | None,
    json: bool,
    quiet: bool,
) -> None:
    """``enroll --from-csv FILE``: the rows of FILE instead of NAME and IMAGES."""
    with user_errors():
        from facestyle.errors import UsageError
        from facestyle.gallery.bulk import DEFAULT_BATCH_SIZE, check_bulk_options, csv_rows

        if name is not None or images:
            raise UsageError("--from-csv takes the names and photos from the file: give no NAME or IMAGES")
        if new or add:
            raise UsageError("--new and --add go with NAME, not with --from-csv")
        batch_size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        check_bulk_options(workers, batch_size)
        specs = csv_rows(csv_file)
        _run(specs, largest, gallery, model, detector, crop, device, workers, batch_size, json, quiet)


def _run(specs, largest, gallery, model, detector, crop, device, workers, batch_size, json, quiet) -> None:
    """Open the gallery for photos, enroll ``specs``, report; raises the exit."""
    # Idle OpenMP threads sleep rather than spin: spinning threads of this process took the cores the
    # workers needed (measured: docs/bulk-enrollment.md). Read when torch loads, which is below.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from facestyle.gallery.bulk import BulkRow, enroll_rows
    from facestyle.gallery.faces import open_for_photos

    def on_row(row: BulkRow) -> None:
        if json:
            print_json(row.to_dict())
        elif row.status not in ("ok", "duplicate"):
            item_error(row.error if row.error is not None else f"{row.image}: {row.reason}")
        for other in row.look_alikes:
            err_warn(
                f"{row.image} is near-identical to a template of {other.name!r} "
                f"(cosine {other.score:.4f}): the same photo or person under two names?"
            )

    with open_for_photos(
        gallery, model=model, detector=detector, device=device, crop=crop, create=True,
        autosave=False, on_note=note,
    ) as g:  # fmt: skip
        report = enroll_rows(
            g, specs, largest=largest, workers=workers, batch_size=batch_size,
            progress=progress_fn(quiet or json), on_row=on_row,
        )  # fmt: skip
    summary = report.summary()
    if json:
        print_json({"summary": summary})
    else:
        out.print(_summary_line(summary))
    raise typer.Exit(report.exit_code)


def _summary_line(s: dict) -> str:
    """The human summary: what was enrolled, what was not and why, and how fast."""
    people = "person" if s["identities"] == 1 else "people"
    parts = [f"enrolled {s['ok']} photo(s) of {s['identities']} {people} ({s['created']} new)"]
    for key, words in (
        ("duplicate", "already enrolled (skipped)"),
        ("no_face", "without a face"),
        ("several_faces", "with several faces"),
        ("error", "not enrolled (errors above)"),
    ):
        if s[key]:
            parts.append(f"{s[key]} {words}")
    rate = f", {s['photos_per_s']} photos/s" if s["photos_per_s"] else ""
    return (
        "; ".join(parts)
        + f": {s['photos']} photo(s) in {s['seconds']:.1f} s ({s['workers']} worker(s){rate})"
    )


def register(app: typer.Typer) -> None:
    app.command("enroll-dir")(enroll_dir)
