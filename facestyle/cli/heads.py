"""Heads on a shared backbone: ``classify train|predict`` and ``detect-head train|eval``."""

from __future__ import annotations

from pathlib import Path

import typer

from facestyle.cli._common import JsonOpt, QuietOpt, err, note, out, print_json, progress, user_errors

classify_app = typer.Typer(
    help="Image classification by transfer learning on a frozen backbone.", no_args_is_help=True
)
detect_head_app = typer.Typer(
    help="A trainable YOLO-style grid face-detection head on backbone features.", no_args_is_help=True
)

DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA when present).")


def _bar(quiet: bool, label: str):
    def wrap(items):
        items = list(items)
        return progress(items, total=len(items), label=label, quiet=quiet)

    return wrap


@classify_app.command("train")
def classify_train(
    data_dir: Path = typer.Argument(..., help="Folder with one sub-folder of images per class."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Where to write the head (.pt)."),
    backbone: str = typer.Option(
        "dlib-resnet-v1",
        "--backbone",
        "-b",
        help="Face model (dlib-resnet-v1, facenet-vggface2) or image "
        "backbone (vgg19-imagenet; vgg19-random is untrained).",
    ),
    detector: str = typer.Option("mtcnn", "--detector", "-d", help="Face backbones: mtcnn or haar."),
    no_face: str = typer.Option(
        "skip",
        "--no-face",
        help="Face backbones, image without a detected face: skip it, or use the whole "
        "image as the face (tight crops such as AT&T).",
    ),
    hidden: int = typer.Option(0, "--hidden", help="0: linear head; N: one hidden layer of N units."),
    dropout: float = typer.Option(0.0, "--dropout"),
    epochs: int = typer.Option(300, "--epochs"),
    lr: float = typer.Option(0.01, "--lr"),
    test_fraction: float = typer.Option(0.3, "--test-fraction", help="Held-out share of each class."),
    train_per_class: int | None = typer.Option(
        None, "--train-per-class", help="Few-shot: exactly N training images per class, the rest held out."
    ),
    seed: int = typer.Option(0, "--seed"),
    confusion: Path | None = typer.Option(
        None, "--confusion", help="Confusion-matrix PNG (default: next to --out)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute features even if cached."),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train a classifier head; report held-out accuracy, per-class scores and a confusion matrix."""
    with user_errors():
        from facestyle.errors import UsageError
        from facestyle.heads.classify import TrainConfig, save_confusion_png, save_head, train_classifier
        from facestyle.heads.features import make_backbone

        if no_face not in ("skip", "whole"):
            raise UsageError(f"--no-face must be skip or whole, got {no_face!r}")
        bb = make_backbone(backbone, detector=detector, no_face=no_face, device=device)  # type: ignore[arg-type]
        if not bb.trained:
            note(
                f"[yellow]warning:[/] backbone {backbone} is UNTRAINED (random weights): results are not "
                "those of a pretrained network"
            )
        cfg = TrainConfig(hidden=hidden, dropout=dropout, epochs=epochs, lr=lr, seed=seed)
        result = train_classifier(
            data_dir,
            bb,
            cfg,
            test_fraction,
            train_per_class,
            seed,
            use_cache=not no_cache,
            progress=_bar(quiet or json, "features"),
        )
        save_head(result, out_path)
        png = confusion or out_path.with_suffix(".confusion.png")
        save_confusion_png(result.confusion, result.classes, png, title=f"{backbone}: held-out confusion")
        m = result.metrics
        if json:
            print_json(
                {
                    **m,
                    "head": str(out_path),
                    "confusion_png": str(png),
                    "classes": result.classes,
                    "skipped": [{"image": p, "reason": r} for p, r in result.skipped],
                }
            )
            return
        for path, reason in result.skipped:
            err.print(f"skipped {path}: {reason}", highlight=False)
        out.print(
            f"held-out accuracy {m['accuracy']:.4f} on {m['n_test']} images "
            f"({m['n_classes']} classes, {m['n_train']} training images, {m['n_skipped']} skipped)"
        )
        worst = sorted(m["per_class"], key=lambda r: (r["f1"], r["class"]))[:5]
        for row in worst:
            out.print(
                f"  {row['class']:<20} precision {row['precision']:.3f} recall {row['recall']:.3f} "
                f"f1 {row['f1']:.3f} n={row['support']}"
            )
        out.print(f"head written to {out_path}; confusion matrix {png}")


@classify_app.command("predict")
def classify_predict(
    head_path: Path = typer.Argument(..., help="Head file from `classify train`."),
    images: list[Path] = typer.Argument(..., help="Images to classify."),
    top_k: int = typer.Option(1, "--top-k", "-k", help="How many classes to list per image."),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
) -> None:
    """Classify images with a trained head (its own backbone is rebuilt from the head file)."""
    with user_errors():
        from facestyle.heads.classify import load_head, predict_files

        preds = predict_files(load_head(head_path), list(images), top_k=top_k, device=device)
        if json:
            data = [p.to_dict() for p in preds]
            print_json(data if len(data) != 1 else data[0])
        else:
            for p in preds:
                if p.status != "ok":
                    out.print(f"{p.path}: {p.status}")
                    continue
                ranked = ", ".join(f"{c} {prob:.3f}" for c, prob in p.top)
                out.print(f"{p.path}: {ranked}")
        if any(p.status != "ok" for p in preds):
            from facestyle.errors import EXIT_BAD_INPUT, EXIT_NO_FACE

            raise typer.Exit(
                EXIT_NO_FACE if all(p.status in ("ok", "no_face") for p in preds) else EXIT_BAD_INPUT
            )


def register(app: typer.Typer) -> None:
    app.add_typer(classify_app, name="classify")
    app.add_typer(detect_head_app, name="detect-head")
