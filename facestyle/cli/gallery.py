"""Gallery commands: enroll, verify, identify and `gallery list|show|remove|rename|stats|rebuild`.

Exit codes (facestyle/errors.py): 0 match / success, 1 no match or unknown, 2 usage (including
several faces in an enroll photo without ``--largest``), 3 no face found, 4 model weights missing,
5 unreadable image, 6 gallery problem (none there, name not enrolled, model mismatch). Batch commands
go on past a bad image and exit with the most serious code met: 5 > 3 > 2 > 1 > 0.
"""

from __future__ import annotations

from pathlib import Path

import typer

from facestyle.cli._common import (
    STATUS_EXIT,
    CropOpt,
    JsonOpt,
    QuietOpt,
    checked_threshold,
    describe,
    err_warn,
    item_error,
    note,
    out,
    print_json,
    progress,
    user_errors,
    worst_exit,
)
from facestyle.cli.gallery_options import DetectorOpt, DeviceOpt, GalleryOpt, ModelOpt, gallery_location
from facestyle.errors import EXIT_NO_MATCH, EXIT_OK

StrangerRateOpt = typer.Option(
    0.05,
    "--stranger-rate",
    help="Without --threshold or a stored one, the gallery sets its threshold from the scores between "
    "its own identities, so that about this share of strangers is accepted per probe (never below the "
    "model's threshold); 0 turns this off (docs/gallery.md).",
)
ThresholdOpt = typer.Option(
    None,
    "--threshold",
    "-t",
    help="Cosine threshold (default: the gallery's stored one, else the model's measured one).",
)


def _open_for_photos(
    gallery: str | None,
    model: str | None,
    detector: str,
    device: str | None,
    write: bool,
    crop: str = "auto",
    stranger_rate: float = 0.05,
):
    """The gallery with a face pipeline on its own model (a different --model is refused first).
    Reads (verify, identify) open it read-only: they work on read-only storage and take no lock."""
    from facestyle.gallery.faces import open_for_photos

    return open_for_photos(
        gallery,
        model=model,
        detector=detector,
        device=device,
        crop=crop,
        create=write,
        read_only=not write,
        autosave=False,
        on_note=note,
        stranger_rate=stranger_rate or None,
    )


def _print_faces(answer) -> None:
    """The human lines of an :class:`~facestyle.gallery.results.Identification`."""
    for i, fm in enumerate(answer.faces):
        who = fm.identity or "unknown"
        score = "-" if fm.score is None else f"{fm.score:.4f}"
        others = ", ".join(f"{c.name} {c.score:.3f}" for c in fm.candidates[1:])
        tail = f"  (next: {others})" if others else ""
        prefix = answer.image + (f" face {i + 1}" if len(answer.faces) > 1 else "")
        out.print(f"{prefix}: {who} {score}{tail}")


def _ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _enrolled_line(answer) -> str:
    """The human line of an :class:`~facestyle.gallery.results.Enrollment`."""
    if answer.duplicate:
        return f"{answer.image}: already enrolled as {answer.name!r} (nothing added)"
    if answer.created:
        return f"{answer.image}: enrolled {answer.name!r} (new identity)"
    return f"{answer.image}: added a {_ordinal(answer.templates)} template to {answer.name!r}"


def enroll(
    name: str | None = typer.Argument(
        None,
        metavar="NAME",
        help="The person's name (any text; stored as data). Not with --from-csv.",
        show_default=False,
    ),
    images: list[Path] | None = typer.Argument(
        None,
        metavar="IMAGES",
        help="One photo is enough; more photos add templates.",
        readable=False,
        show_default=False,
    ),
    new: bool = typer.Option(False, "--new", help="Refuse if NAME is already enrolled (a new person)."),
    add: bool = typer.Option(False, "--add", help="Refuse unless NAME is already enrolled (more photos)."),
    largest: bool = typer.Option(False, "--largest", help="Use the largest face when a photo has several."),
    gallery: str | None = GalleryOpt,
    model: str | None = ModelOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    device: str | None = DeviceOpt,
    from_csv: Path | None = typer.Option(
        None,
        "--from-csv",
        help="Enroll the name,path rows of a CSV file instead (header optional; paths relative to the "
        "file's folder): bulk and resumable, a report row per photo (docs/bulk-enrollment.md).",
        show_default=False,
        readable=False,
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="With --from-csv: processes decoding and detecting photos (0: this one; default: "
        "chosen for this machine, see docs/bulk-enrollment.md).",
        show_default=False,
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        help="With --from-csv: aligned faces embedded together (default 32).",
        show_default=False,
    ),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Enroll NAME from one or more photos (one face each). Re-enrolling the same photo adds nothing.

    Without --new or --add, an enrolled NAME gets more templates and the output says so. A photo
    near-identical to another identity's template is warned about, naming it. --from-csv FILE enrolls
    many people at once (as `enroll-dir` does for one folder per person)."""
    if from_csv is not None:
        from facestyle.cli.bulk import enroll_csv

        enroll_csv(
            from_csv, name=name, images=images or [], new=new, add=add, largest=largest, gallery=gallery,
            model=model, detector=detector, crop=crop, device=device, workers=workers,
            batch_size=batch_size, json=json, quiet=quiet,
        )  # fmt: skip
        return
    with user_errors():
        from facestyle.errors import FacestyleError, GalleryError, UsageError
        from facestyle.gallery.results import ImageAnswer

        if name is None or not images:
            raise UsageError("enroll needs NAME and IMAGES (or --from-csv FILE)")
        if workers is not None or batch_size is not None:
            raise UsageError("--workers and --batch-size go with --from-csv")
        codes: list[int] = []
        with _open_for_photos(gallery, model, detector, device, write=True, crop=crop) as g:
            g.check_enroll(name, new=new, add=add)  # before any photo is read
            for path in progress(images, total=len(images), label="enroll", quiet=quiet or json):
                try:
                    answer = g.enroll_image(name, path, largest=largest, new=new, add=add)
                    new, add = False, add or new  # --new holds for the first photo that enrolls
                    codes.append(EXIT_OK)
                except FacestyleError as exc:
                    if isinstance(exc, GalleryError):
                        raise  # the whole gallery (or the name) is refused, not this photo
                    answer = ImageAnswer.failed(path, exc, describe(exc))
                    codes.append(exc.exit_code)
                    if not json:
                        item_error(exc)
                if answer.status == "ok":
                    for other in answer.look_alikes:
                        err_warn(
                            f"{answer.image} is near-identical to a template of {other.name!r} "
                            f"(cosine {other.score:.4f}): the same photo or person under two names?"
                        )
                if json:
                    print_json(answer.to_dict())
                elif answer.status == "ok":
                    out.print(_enrolled_line(answer), highlight=False)
        raise typer.Exit(worst_exit(codes))


def verify(
    name: str = typer.Argument(..., help="The claimed identity."),
    image: Path = typer.Argument(..., help="A photo (its largest face is checked).", readable=False),
    threshold: float | None = ThresholdOpt,
    stranger_rate: float = StrangerRateOpt,
    gallery: str | None = GalleryOpt,
    model: str | None = ModelOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
) -> None:
    """1:1 check: is the face in IMAGE the enrolled NAME? Exit 0 match, 1 no match."""
    with user_errors():
        threshold = checked_threshold(threshold)
        with _open_for_photos(gallery, model, detector, device, False, crop, stranger_rate) as g:
            answer = g.verify_image(name, image, threshold=threshold)
        if json:
            print_json(answer.to_dict())
        else:
            verdict = "match" if answer.match else "no match"
            out.print(
                f"{answer.image}: {verdict} for {answer.claimed!r}: similarity {answer.score:.4f} "
                f"(threshold {answer.threshold:.4f}: {answer.threshold_source})"
            )
        raise typer.Exit(EXIT_OK if answer.match else EXIT_NO_MATCH)


def identify(
    images: list[Path] = typer.Argument(
        ..., help="Photos; every face in each is identified.", readable=False
    ),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Candidates listed per face."),
    threshold: float | None = ThresholdOpt,
    stranger_rate: float = StrangerRateOpt,
    gallery: str | None = GalleryOpt,
    model: str | None = ModelOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """1:N search: who is in each photo? "unknown" below the threshold. Exit 0 all known, 1 any unknown."""
    with user_errors():
        threshold = checked_threshold(threshold)
        codes: list[int] = []
        with _open_for_photos(gallery, model, detector, device, False, crop, stranger_rate) as g:
            answers = g.identify_images(images, top_k=top_k, threshold=threshold)
            for answer in progress(answers, total=len(images), label="identify", quiet=quiet or json):
                code = STATUS_EXIT[answer.status]
                codes.append(EXIT_NO_MATCH if code == EXIT_OK and not answer.known else code)
                if answer.status == "error" and not json:
                    item_error(answer.error or "error")
                if json:
                    print_json(answer.to_dict())
                elif answer.status != "error":
                    _print_faces(answer)
        raise typer.Exit(worst_exit(codes))


# ---- gallery maintenance (no torch needed) -------------------------------------------------------
gallery_app = typer.Typer(help="Inspect and maintain a gallery: list, show, remove, rename, stats, rebuild, "
                          "migrate.",
                          no_args_is_help=True)  # fmt: skip


def _open(gallery: str | None, write: bool = False, stranger_rate: float = 0.05):
    from facestyle.gallery import Gallery

    return Gallery.open(
        gallery, create=False, read_only=not write, autosave=True, on_note=note,
        stranger_rate=stranger_rate or None,
    )  # fmt: skip


@gallery_app.command("list")
def list_cmd(gallery: str | None = GalleryOpt, json: bool = JsonOpt) -> None:
    """Enrolled names with their number of templates."""
    with user_errors(), _open(gallery) as g:
        counts = g.template_counts()
        if json:
            print_json([{"name": n, "templates": c} for n, c in counts.items()])
        else:
            for n, c in counts.items():
                out.print(f"{n}\t{c}")


@gallery_app.command("show")
def show_cmd(name: str = typer.Argument(...), gallery: str | None = GalleryOpt, json: bool = JsonOpt) -> None:
    """One identity: its templates with source file name, image SHA-256, detector (and how the face was
    found), box and date."""
    with user_errors(), _open(gallery) as g:
        info = g.show(name)
        data = {**info.to_dict(), "model": g.model}
        if json:
            print_json(data)
        else:
            out.print(f"{data['name']}: {len(data['templates'])} template(s), model {data['model']}")
            for t in data["templates"]:
                sha = (t["image_sha256"] or "")[:12]
                found = f" ({t['found_by']})" if t["found_by"] not in (None, "detector") else ""
                how = f"{t['detector'] or '-'}{found}"
                out.print(f"  #{t['id']} {t['source'] or '-'} sha256:{sha} {how} {t['created']}")


@gallery_app.command("remove")
def remove_cmd(
    name: str = typer.Argument(...), gallery: str | None = GalleryOpt, json: bool = JsonOpt
) -> None:
    """Remove NAME and all its templates."""
    with user_errors(), _open(gallery, write=True) as g:
        n = g.remove(name)
        if json:
            print_json({"removed": name, "templates": n})
        else:
            out.print(f"removed {name!r} ({n} template(s))")


@gallery_app.command("rename")
def rename_cmd(
    old: str = typer.Argument(...),
    new: str = typer.Argument(...),
    gallery: str | None = GalleryOpt,
    json: bool = JsonOpt,
) -> None:
    """Rename OLD to NEW (NEW must not be enrolled)."""
    with user_errors(), _open(gallery, write=True) as g:
        g.rename(old, new)
        if json:
            print_json({"renamed": old, "to": new})
        else:
            out.print(f"renamed {old!r} to {new!r}")


@gallery_app.command("stats")
def stats_cmd(
    gallery: str | None = GalleryOpt, stranger_rate: float = StrangerRateOpt, json: bool = JsonOpt
) -> None:
    """Counts, model, threshold (and where it comes from), index layout and file sizes."""
    with user_errors(), _open(gallery, stranger_rate=stranger_rate) as g:
        stats = g.stats()
        if json:
            print_json(stats)
        else:
            for key, value in stats.items():
                out.print(f"{key:22} {value}")


@gallery_app.command("rebuild")
def rebuild_cmd(gallery: str | None = GalleryOpt, json: bool = JsonOpt) -> None:
    """Rebuild the search index from the database (it is a cache; this is always safe)."""
    with user_errors(), _open(gallery, write=True) as g:
        n = g.rebuild()
        kind = g.stats()["index_kind"]
        if json:
            print_json({"rebuilt": str(g.path), "templates": n, "index_kind": kind})
        else:
            out.print(f"rebuilt the {kind} index of {g.path} ({n} templates)")


@gallery_app.command("migrate")
def migrate_cmd(
    source: str = typer.Argument(
        ...,
        help="The gallery to copy (a directory or a postgresql:// URL).",
        parser=gallery_location,
        metavar="SRC",
    ),
    destination: str = typer.Argument(
        ...,
        help="Where to copy it (created if missing; a directory or a postgresql:// URL).",
        parser=gallery_location,
        metavar="DST",
    ),
    json: bool = JsonOpt,
) -> None:
    """Copy a gallery between backends (a directory to PostgreSQL and back): identities, templates with
    their metadata, the model binding and a stored threshold. SRC is only read; a DST bound to another
    model is refused; into a DST of the same model the copy merges (copying twice adds nothing)."""
    with user_errors():
        from facestyle.gallery.migrate import migrate

        report = migrate(source, destination, on_note=note)
        if json:
            print_json(report.to_dict())
        else:
            out.print(
                f"copied {report.identities} identities and {report.templates} templates "
                f"({report.templates_added} new) from {report.source} ({report.source_backend}) to "
                f"{report.destination} ({report.destination_backend}); model {report.model}"
            )


def register(app: typer.Typer) -> None:
    app.command()(enroll)
    app.command()(verify)
    app.command()(identify)
    app.add_typer(gallery_app, name="gallery")
