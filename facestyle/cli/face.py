"""Face commands: detect, embed, compare, doctor, demo."""

from __future__ import annotations

from pathlib import Path

import typer

from facestyle.cli._common import (
    STATUS_EXIT,
    CropOpt,
    JsonOpt,
    QuietOpt,
    checked_threshold,
    item_error,
    note,
    out,
    print_json,
    progress,
    user_errors,
    worst_exit,
)
from facestyle.errors import EXIT_NO_MATCH, EXIT_OK

ModelOpt = typer.Option("dlib-resnet-v1", "--model", "-m", help="Embedder name or trained checkpoint file.")
DetectorOpt = typer.Option(
    "mtcnn", "--detector", "-d", help="mtcnn (landmarks), haar (fast, box only) or a grid-head file."
)
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Allow an output to replace one of the input files.")


def detect(
    images: list[Path] = typer.Argument(..., help="Image files.", readable=False),
    detector: str = DetectorOpt,
    draw: Path | None = typer.Option(
        None,
        "--draw",
        help="Write a copy with boxes and landmarks (one image).",
        readable=False,
    ),
    chips: Path | None = typer.Option(
        None, "--chips", help="Write aligned face chips into this folder (was --crop DIR).", readable=False
    ),
    crop: str = CropOpt,
    model: str = typer.Option("dlib-resnet-v1", "--model", "-m", help="Chip geometry used by --chips."),
    overwrite: bool = OverwriteOpt,
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Find faces: box, score, five landmarks and how it was found (found_by) per face."""
    with user_errors():
        from facestyle.api import ImageResult
        from facestyle.detect.finding import CROP_MODES
        from facestyle.embed.features import face_finder
        from facestyle.errors import FacestyleError, ParameterError, UsageError
        from facestyle.io.files import check_output_folder, check_output_path
        from facestyle.io.images import IMAGE_FORMATS, load_image
        from facestyle.models.registry import detector as make_detector

        if draw is not None:
            if len(images) != 1:
                raise UsageError("--draw takes exactly one input image")
            check_output_path(
                draw, param="draw", inputs=images, overwrite=overwrite, suffixes=list(IMAGE_FORMATS)
            )
        if crop not in CROP_MODES:  # --crop DIR wrote chips before --crop took a mode
            raise ParameterError(
                "{crop} is not a mode; use detect, auto or whole (aligned chips: {chips} DIR)",
                crop=crop,
                chips=True,
            )
        if chips is not None:
            check_output_folder(chips, param="chips")
        det = face_finder(make_detector(detector, device=device), crop, device)  # type: ignore[arg-type]
        results: list[ImageResult] = []
        for path in progress(images, total=len(images), label="detect", quiet=quiet or json):
            try:
                image = load_image(path)
                faces = det.detect(image)
            except FacestyleError as exc:
                results.append(ImageResult(str(path), "error", [], str(exc)))
                item_error(exc)
                continue
            if draw is not None:
                from facestyle.detect.draw import draw_faces
                from facestyle.io.images import save_image

                save_image(draw, draw_faces(image, faces))
            if chips is not None:
                from facestyle.api import save_face_chips

                save_face_chips(image, faces, chips, stem=Path(path).stem, model=model)
            results.append(ImageResult(str(path), "ok" if faces else "no_face", faces))
        if json:
            docs = [r.to_dict(embedding=False) for r in results]
            print_json(docs if len(docs) != 1 else docs[0])
        else:
            for r in results:  # a failed photo was told on stderr, with its reason
                if r.status == "no_face":
                    out.print(f"{r.path}: no face")
                if r.status != "ok":
                    continue
                for i, f in enumerate(r.faces):
                    box = ", ".join(f"{v:.0f}" for v in f.box)
                    by = "" if f.found_by == "detector" else f" found_by={f.found_by}"
                    out.print(f"{r.path}: face {i + 1} box=({box}) score={f.score:.3f}{by}")
        raise typer.Exit(worst_exit(STATUS_EXIT[r.status] for r in results))


def embed(
    images: list[Path] = typer.Argument(
        ..., help="Image files (or aligned chips with --aligned).", readable=False
    ),
    model: str = ModelOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    aligned: bool = typer.Option(
        False, "--aligned", help="Inputs are already aligned chips of the model's size."
    ),
    out_file: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Save a .npy: one row per image (largest face; NaN if none).",
        readable=False,
    ),
    overwrite: bool = OverwriteOpt,
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Embed faces: L2-normalised vectors of the chosen model."""
    with user_errors(flags={"out": "--out"}):
        from facestyle.api import FacePipeline, face_matrix
        from facestyle.io.files import check_output_path

        if out_file is not None:
            check_output_path(out_file, param="out", inputs=images, overwrite=overwrite, suffixes=[".npy"])
        pipe = FacePipeline(model, detector, device=device, crop=crop)  # type: ignore[arg-type]
        results = list(
            progress(
                pipe.embed_files(images, aligned=aligned),
                total=len(images),
                label="embed",
                quiet=quiet or json,
            )
        )
        for r in results:
            if r.status == "error":
                item_error(r.error)
        if out_file is not None:
            from facestyle.io.files import save_array

            rows = face_matrix(results, pipe.embedder.embedding_size)
            save_array(out_file, rows)
            note(f"wrote {out_file} ({len(results)} x {rows.shape[1]}, {pipe.model_name})")
        if json:
            for r in results:
                print_json(r.to_dict())
        elif out_file is None:
            for r in results:  # a failed photo was told on stderr, with its reason
                if r.status != "error":
                    out.print(f"{r.path}: {r.status}" + (f", {len(r.faces)} face(s)" if r.faces else ""))
        raise typer.Exit(worst_exit(STATUS_EXIT[r.status] for r in results))


def compare(
    image1: Path = typer.Argument(..., help="First image.", readable=False),
    image2: Path = typer.Argument(..., help="Second image.", readable=False),
    model: str = ModelOpt,
    detector: str = DetectorOpt,
    crop: str = CropOpt,
    threshold: float | None = typer.Option(
        None, "--threshold", "-t", help="Cosine threshold (default: the model's measured one)."
    ),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
) -> None:
    """Same person or not: cosine similarity of the largest faces. Exit 0 same, 1 different."""
    with user_errors():
        from facestyle.api import FacePipeline
        from facestyle.api import compare as compare_images

        threshold = checked_threshold(threshold)
        pipe = FacePipeline(model, detector, device=device, crop=crop)  # type: ignore[arg-type]
        result = compare_images(image1, image2, pipeline=pipe, threshold=threshold)
        if json:
            print_json(result.to_dict())
        else:
            verdict = {
                True: "same person",
                False: "different people",
                None: "no threshold: run `facestyle calibrate`",
            }
            out.print(
                f"similarity {result.similarity:.4f} (threshold {result.threshold}): {verdict[result.same]}"
            )
        raise typer.Exit(EXIT_OK if result.same else EXIT_NO_MATCH)


def doctor(json: bool = JsonOpt) -> None:
    """Versions, device, cache paths and which model weights are present."""
    with user_errors():
        from facestyle.doctor import collect

        report = collect()
        if json:
            print_json(report)
            return
        for key in (
            "facestyle",
            "python",
            "torch",
            "torchvision",
            "numpy",
            "faiss",
            "opencv",
            "h5py",
            "device",
            "threads",
        ):
            out.print(f"{key:12} {report[key]}")
        out.print(f"{'home':12} {report['home']}")
        for m in report["models"]:
            out.print(f"model {m['name']:24} {m['status']:12} {m['path'] or m['hint']}")


def demo(
    data: Path = typer.Option(
        Path("../shared/data"), "--data", help="The shared data folder.", readable=False
    ),
    out_dir: Path = typer.Option(
        Path("demo-out"), "--out", help="Where demo images are written.", readable=False
    ),
    style: bool = typer.Option(True, "--style/--no-style", help="Also run a small style transfer."),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Detect, align and compare real faces from the shared data, offline, and print the result."""
    with user_errors():
        from facestyle.demo import run_demo

        report = run_demo(data, out_dir, printer=None if json else out.print, quiet=quiet, with_style=style)
        if json:
            print_json(report)


def register(app: typer.Typer) -> None:
    app.command()(detect)
    app.command()(embed)
    app.command()(compare)
    app.command()(doctor)
    app.command()(demo)
