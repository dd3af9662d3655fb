"""Heads on a shared backbone: ``classify train|predict`` and ``detect-head annotate|train|eval|detect``.

Each command parses its flags, calls :class:`facestyle.heads.classify.Classifier` or the workflow
functions of :mod:`facestyle.heads.grid_detect`, and prints their ``to_dict()``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from facestyle.cli._common import (
    STATUS_EXIT,
    CropOpt,
    JsonOpt,
    QuietOpt,
    err,
    item_error,
    note,
    out,
    print_json,
    progress_fn,
    user_errors,
    worst_exit,
)

classify_app = typer.Typer(
    help="Image classification by transfer learning on a frozen backbone.", no_args_is_help=True
)
detect_head_app = typer.Typer(
    help="A trainable YOLO-style grid face-detection head on backbone features.", no_args_is_help=True
)

DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA when present).")
#: What `classify predict` takes for a head file (its first argument) rather than an image.
HEAD_SUFFIXES = (".pt", ".pth")


@classify_app.command("train")
def classify_train(
    data_dir: Path = typer.Argument(
        ..., help="Folder with one sub-folder of images per class.", readable=False
    ),
    out_path: Path = typer.Option(..., "--out", "-o", help="Where to write the head (.pt).", readable=False),
    backbone: str = typer.Option(
        "auto",
        "--backbone",
        "-b",
        help="auto (dlib-resnet-v1 when most sampled images show one dominant face, else "
        "mobilenet-v2-imagenet), a face model (dlib-resnet-v1, facenet-vggface2) or an image "
        "backbone (mobilenet-v2-imagenet, vgg16-hed, vgg19-imagenet; vgg19-random is untrained).",
    ),
    detector: str = typer.Option("mtcnn", "--detector", "-d", help="Face backbones: mtcnn or haar."),
    crop: str = CropOpt,
    no_face: str = typer.Option(
        "skip",
        "--no-face",
        help="Old name: --no-face whole is --crop auto (the whole image is used only where it looks "
        "like a face, with landmarks found by a model); skip is the default.",
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
    fine_tune: int = typer.Option(
        0, "--fine-tune", help="N > 0: also train the backbone's last stage for N epochs (dlib-resnet-v1)."
    ),
    confusion: Path | None = typer.Option(
        None,
        "--confusion",
        help="Confusion-matrix PNG (default: next to --out).",
        readable=False,
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute features even if cached."),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train a classifier head; report held-out accuracy, per-class scores and a confusion matrix."""
    with user_errors(flags={"fine_tune_epochs": "--fine-tune", "split_seed": "--seed"}):
        from facestyle.errors import FacestyleError
        from facestyle.heads.classify import Classifier, ClassifierOptions
        from facestyle.io.files import check_output_path
        from facestyle.io.folders import scan_labelled_folder

        # Both outputs are checked before any image is read: never one of the training images (a
        # head or PNG over a photo), a head file's suffix (what `classify predict` recognises), and a
        # directory that exists and is writable.
        try:
            inputs = scan_labelled_folder(data_dir).paths
        except FacestyleError:
            inputs = []  # the library says what is wrong with the folder, after checking its parameters
        check_output_path(out_path, param="out", inputs=inputs, suffixes=HEAD_SUFFIXES)
        confusion = check_output_path(
            confusion or out_path.with_suffix(".confusion.png"), param="confusion", inputs=inputs,
            suffixes=[".png"],
        )  # fmt: skip

        clf = Classifier.train(
            data_dir,
            backbone,
            detector=detector,
            no_face=no_face,  # type: ignore[arg-type]
            crop=crop,  # type: ignore[arg-type]
            options=ClassifierOptions(hidden=hidden, dropout=dropout, epochs=epochs, lr=lr, seed=seed),
            test_fraction=test_fraction,
            train_per_class=train_per_class,
            split_seed=seed,
            fine_tune_epochs=fine_tune,
            device=device,
            cache=not no_cache,
            progress=progress_fn(quiet or json),
        )
        name = clf.backbone["name"]
        if not quiet and clf.metrics["backbone_probe"]["auto"]:  # chosen here: say which and why
            note(f"backbone {name}: {clf.metrics['backbone_reason']}")
        if not clf.metrics["backbone_trained"]:
            note(
                f"[yellow]warning:[/] backbone {name} is UNTRAINED (random weights): results are not "
                "those of a pretrained network"
            )
        clf.save(out_path)
        png = clf.save_confusion_png(confusion)
        if json:
            print_json({**clf.to_dict(), "head": str(out_path), "confusion_png": str(png)})
            return
        for path, reason in clf.skipped:
            err.print(f"skipped {path}: {reason}", highlight=False)
        m = clf.metrics
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
    inputs: list[Path] = typer.Argument(
        ...,
        metavar="[HEAD] IMAGE",
        help="A head file from `classify train`, then the images to classify; with --imagenet, images only.",
        readable=False,
    ),
    imagenet: bool = typer.Option(
        False,
        "--imagenet",
        help="Label the images with the 1000 ImageNet categories of mobilenet-v2-imagenet (no head file).",
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", "-k", help="How many classes to list per image (default: 1; 5 with --imagenet)."
    ),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Classify images with a trained head (its own backbone is rebuilt from the head file), or with
    --imagenet label them with ImageNet categories.

    One result per image on stdout (JSON: image, status ok|no_face|error, top classes, error);
    unreadable images are reported on stderr, and the exit code is the worst image's.
    """
    with user_errors():
        from facestyle.errors import UsageError
        from facestyle.io.folders import IMAGE_SUFFIXES

        first = inputs[0]
        if imagenet:
            if first.suffix.lower() in HEAD_SUFFIXES:
                raise UsageError(
                    f"give either a head file or --imagenet, not both ({first} is a head file; "
                    "--imagenet takes only images)"
                )
            images = list(inputs)
        else:
            if first.suffix.lower() in IMAGE_SUFFIXES:
                raise UsageError(
                    f"{first} is an image, not a head file: give a head file from `classify train` "
                    "before the images, or --imagenet to label images with ImageNet categories"
                )
            if len(inputs) < 2:
                raise UsageError(
                    "give a head file from `classify train` and at least one image (or --imagenet)"
                )
            images = list(inputs[1:])
        if imagenet:
            from facestyle.heads.imagenet import ImageNetClassifier

            predictor = ImageNetClassifier(device)
            k = 5 if top_k is None else top_k
        else:
            from facestyle.heads.classify import Classifier

            predictor = Classifier.load(first, device=device)
            k = 1 if top_k is None else top_k
        preds = predictor.predict(images, top_k=k, progress=progress_fn(quiet or json))
        for p in preds:
            if p.error:
                item_error(p.error)
        if json:
            data = [p.to_dict() for p in preds]
            print_json(data if len(data) != 1 else data[0])
        else:
            for p in preds:
                if p.status == "error":
                    continue  # told on stderr above; stdout holds results only
                ranked = ", ".join(f"{c} {prob:.3f}" for c, prob in p.top)
                out.print(f"{p.path}: {ranked if p.status == 'ok' else p.status}")
        raise typer.Exit(worst_exit(STATUS_EXIT[p.status] for p in preds))


@detect_head_app.command("annotate")
def detect_head_annotate(
    images: list[Path] = typer.Argument(..., help="Images to label.", readable=False),
    out_path: Path = typer.Option(
        ..., "--out", "-o", help="CSV to write (image,x1,y1,x2,y2,label,score).", readable=False
    ),
    detector: str = typer.Option("mtcnn", "--detector", "-d", help="mtcnn or haar."),
    device: str | None = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Label images with a detector's boxes: a training set for the grid head (unreadable images are
    reported on stderr and left out; the exit code then says so)."""
    with user_errors():
        from facestyle.heads.grid_detect import annotate, write_csv

        rows = annotate(images, detector, device=device, progress=progress_fn(quiet))
        for row in rows:
            if row.error:
                item_error(row.error)
        write_csv(out_path, rows)
        n_read = sum(1 for r in rows if not r.error)
        note(f"{n_read} images, {sum(len(r.faces) for r in rows)} boxes written to {out_path}")
        raise typer.Exit(worst_exit(STATUS_EXIT["error" if r.error else "ok"] for r in rows))


@detect_head_app.command("train")
def detect_head_train(
    annotations: Path = typer.Argument(
        ..., help="CSV (image,x1,y1,x2,y2[,label]) or COCO-style JSON.", readable=False
    ),
    out_path: Path = typer.Option(..., "--out", "-o", help="Where to write the head (.pt).", readable=False),
    eval_annotations: Path | None = typer.Option(
        None, "--eval", help="Held-out annotations to score.", readable=False
    ),
    images_root: Path | None = typer.Option(
        None, "--images-root", help="Base of relative image paths.", readable=False
    ),
    epochs: int = typer.Option(10, "--epochs"),
    lr: float = typer.Option(2e-3, "--lr"),
    anchors: str = typer.Option("", "--anchors", help="Anchor sizes in cells, 'w,h:w,h' (default: none)."),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train the grid detection head on frozen dlib ResNet features; report mAP@0.5."""
    with user_errors(flags={"eval_annotations": "--eval"}):
        from facestyle.heads import grid_detect as gd

        options = gd.GridHeadOptions(epochs=epochs, lr=lr, anchors=gd.parse_anchors(anchors))
        run = gd.train_grid_detector(
            annotations,
            eval_annotations=eval_annotations,
            images_root=images_root,
            options=options,
            device=device,
            progress=progress_fn(quiet or json),
        )
        run.save(out_path)
        report = run.to_dict()
        if json:
            print_json({**report, "head": str(out_path)})
            return
        for item in report["skipped"]:
            err.print(f"skipped {item['image']}: {item['reason']}", highlight=False)
        out.print(
            f"trained on {report['train_images']} images in {report['train_seconds']} s; "
            f"mAP@0.5 train {report['map50_train']:.3f}"
            + (f", held-out {report['map50_eval']:.3f}" if "map50_eval" in report else "")
        )
        out.print(f"head written to {out_path}")


@detect_head_app.command("eval")
def detect_head_eval(
    head_path: Path = typer.Argument(..., help="Head file from `detect-head train`.", readable=False),
    annotations: Path = typer.Argument(
        ..., help="CSV or COCO-style JSON with the reference boxes.", readable=False
    ),
    images_root: Path | None = typer.Option(None, "--images-root", readable=False),
    iou: float = typer.Option(0.5, "--iou", help="IoU for a match."),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """mAP of a trained grid head against reference boxes."""
    with user_errors():
        from facestyle.heads.grid_detect import evaluate_grid_detector

        result = evaluate_grid_detector(
            head_path,
            annotations,
            images_root=images_root,
            iou=iou,
            device=device,
            progress=progress_fn(quiet or json),
        )
        if json:
            print_json(result.to_dict())
            return
        for image, reason in result.skipped:
            err.print(f"skipped {image}: {reason}", highlight=False)
        out.print(f"mAP@{iou:g} {result.map:.3f} on {result.images} images")


@detect_head_app.command("detect")
def detect_head_detect(
    head_path: Path = typer.Argument(..., help="Head file from `detect-head train`.", readable=False),
    images: list[Path] = typer.Argument(..., help="Images.", readable=False),
    threshold: float = typer.Option(0.5, "--threshold", help="Minimum score."),
    draw: Path | None = typer.Option(
        None, "--draw", help="Write a copy with the boxes (one image).", readable=False
    ),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
) -> None:
    """Detect faces with a trained grid head (boxes and scores, no landmarks)."""
    with user_errors(flags={"score_threshold": "--threshold"}):
        from facestyle.errors import UsageError
        from facestyle.io.images import load_image
        from facestyle.models.registry import detector as make_detector

        if draw is not None and len(images) != 1:
            raise UsageError("--draw takes exactly one input image")
        det = make_detector("grid-head", device, weights=head_path, score_threshold=threshold)
        results = []
        for path in images:
            image = load_image(path)
            faces = det.detect(image)
            if draw is not None:
                from facestyle.detect.draw import draw_faces
                from facestyle.io.images import save_image

                save_image(draw, draw_faces(image, faces))
            results.append({"image": str(path), "faces": [f.to_dict() for f in faces]})
        if json:
            print_json(results if len(results) != 1 else results[0])
        else:
            for r in results:
                boxes = "; ".join(
                    ", ".join(f"{v:.0f}" for v in f["box"]) + f" ({f['score']:.2f})" for f in r["faces"]
                )
                out.print(f"{r['image']}: {len(r['faces'])} face(s) {boxes}")


def register(app: typer.Typer) -> None:
    app.add_typer(classify_app, name="classify")
    app.add_typer(detect_head_app, name="detect-head")
