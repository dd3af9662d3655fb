"""Heads on a shared backbone: ``classify train|predict`` and ``detect-head train|eval``."""

from __future__ import annotations

from pathlib import Path

import typer

from facestyle.cli._common import (
    JsonOpt,
    QuietOpt,
    err,
    note,
    out,
    print_json,
    progress,
    progress_fn,
    user_errors,
)

classify_app = typer.Typer(
    help="Image classification by transfer learning on a frozen backbone.", no_args_is_help=True
)
detect_head_app = typer.Typer(
    help="A trainable YOLO-style grid face-detection head on backbone features.", no_args_is_help=True
)

DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA when present).")


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
    fine_tune: int = typer.Option(
        0, "--fine-tune", help="N > 0: also train the backbone's last stage for N epochs (dlib-resnet-v1)."
    ),
    confusion: Path | None = typer.Option(
        None, "--confusion", help="Confusion-matrix PNG (default: next to --out)."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute features even if cached."),
    device: str | None = DeviceOpt,
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train a classifier head; report held-out accuracy, per-class scores and a confusion matrix."""
    with user_errors(flags={"fine_tune_epochs": "--fine-tune"}):
        from facestyle.heads.classify import (
            ClassifierOptions,
            feature_source,
            save_confusion_png,
            save_head,
            source_trained,
            train_classifier,
        )

        bb = feature_source(backbone, detector=detector, no_face=no_face, device=device, cache=not no_cache)  # type: ignore[arg-type]
        if not source_trained(bb):
            note(
                f"[yellow]warning:[/] backbone {backbone} is UNTRAINED (random weights): results are not "
                "those of a pretrained network"
            )
        cfg = ClassifierOptions(hidden=hidden, dropout=dropout, epochs=epochs, lr=lr, seed=seed)
        result = train_classifier(
            data_dir,
            bb,
            cfg,
            test_fraction,
            train_per_class,
            seed,
            progress=progress_fn(quiet or json),
            fine_tune_epochs=fine_tune,
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
                if p.status != "ok":  # error messages already start with the path
                    out.print(p.error if p.error else f"{p.path}: {p.status}")
                    continue
                ranked = ", ".join(f"{c} {prob:.3f}" for c, prob in p.top)
                out.print(f"{p.path}: {ranked}")
        if any(p.status != "ok" for p in preds):
            from facestyle.errors import EXIT_BAD_INPUT, EXIT_NO_FACE

            raise typer.Exit(
                EXIT_NO_FACE if all(p.status in ("ok", "no_face") for p in preds) else EXIT_BAD_INPUT
            )


@detect_head_app.command("annotate")
def detect_head_annotate(
    images: list[Path] = typer.Argument(..., help="Images to label."),
    out_path: Path = typer.Option(..., "--out", "-o", help="CSV to write (image,x1,y1,x2,y2,label,score)."),
    detector: str = typer.Option("mtcnn", "--detector", "-d", help="mtcnn or haar."),
    device: str | None = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Label images with a detector's boxes: a training set for the grid head."""
    with user_errors():
        from facestyle.errors import FacestyleError
        from facestyle.heads.grid_detect import write_csv
        from facestyle.io.images import load_image
        from facestyle.models.registry import detector as make_detector

        det = make_detector(detector, device=device)
        rows = []
        for path in progress(images, total=len(images), label="annotate", quiet=quiet):
            try:
                rows.append((str(path.resolve()), det.detect(load_image(path))))
            except FacestyleError as exc:
                err.print(f"skipped {path}: {exc}", highlight=False)
        write_csv(out_path, rows)
        n_faces = sum(len(f) for _, f in rows)
        note(f"{len(rows)} images, {n_faces} boxes written to {out_path}")


def _encode(ann_path: Path, images_root: Path | None, anchors, quiet: bool):
    from facestyle.heads import grid_detect as gd

    ann = gd.read_annotations(ann_path, images_root)
    anchor_t = gd.GridHead(anchors=anchors).anchors
    return ann, gd.load_and_encode(ann, gd.dlib_feature_maps(), anchor_t, progress=_bar(quiet, "features"))


def _bar(quiet: bool, label: str):
    def wrap(items):
        items = list(items)
        return progress(items, total=len(items), label=label, quiet=quiet)

    return wrap


def _parse_anchors(text: str) -> list[list[float]] | None:
    from facestyle.errors import UsageError

    if not text:
        return None
    try:
        anchors = [[float(v) for v in a.split(",")] for a in text.split(":")]
    except ValueError:
        raise UsageError(f"--anchors must look like '2.5,3:1.5,2' (w,h in cells), got {text!r}") from None
    if any(len(a) != 2 or min(a) <= 0 for a in anchors):
        raise UsageError(f"--anchors must be positive w,h pairs, got {text!r}")
    return anchors


@detect_head_app.command("train")
def detect_head_train(
    annotations: Path = typer.Argument(..., help="CSV (image,x1,y1,x2,y2[,label]) or COCO-style JSON."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Where to write the head (.pt)."),
    eval_annotations: Path | None = typer.Option(None, "--eval", help="Held-out annotations to score."),
    images_root: Path | None = typer.Option(None, "--images-root", help="Base of relative image paths."),
    epochs: int = typer.Option(10, "--epochs"),
    lr: float = typer.Option(2e-3, "--lr"),
    anchors: str = typer.Option("", "--anchors", help="Anchor sizes in cells, 'w,h:w,h' (default: none)."),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train the grid detection head on frozen dlib ResNet features; report mAP@0.5."""
    with user_errors():
        from facestyle.detect.grid import save_grid_head
        from facestyle.heads import grid_detect as gd

        anchor_list = _parse_anchors(anchors)
        ann, data = _encode(annotations, images_root, anchor_list, quiet or json)
        head, log = gd.train_grid_head(
            data, len(ann.classes), gd.GridTrainConfig(epochs=epochs, lr=lr, anchors=anchor_list)
        )
        report = {
            "train_images": len(data.items),
            "train_seconds": round(log["train_seconds"], 2),
            "final_loss": round(log["loss"][-1], 4),
            "map50_train": gd.evaluate(head, data)["map"],
            "classes": ann.classes,
        }
        if eval_annotations is not None:
            _, held = _encode(eval_annotations, images_root, anchor_list, quiet or json)
            report["map50_eval"] = gd.evaluate(head, held)["map"]
            report["eval_images"] = len(held.items)
        save_grid_head(head, ann.classes, out_path, report)
        report["head"] = str(out_path)
        if json:
            print_json(report)
            return
        out.print(
            f"trained on {report['train_images']} images in {report['train_seconds']} s; "
            f"mAP@0.5 train {report['map50_train']:.3f}"
            + (f", held-out {report['map50_eval']:.3f}" if "map50_eval" in report else "")
        )
        out.print(f"head written to {out_path}")


@detect_head_app.command("eval")
def detect_head_eval(
    head_path: Path = typer.Argument(..., help="Head file from `detect-head train`."),
    annotations: Path = typer.Argument(..., help="CSV or COCO-style JSON with the reference boxes."),
    images_root: Path | None = typer.Option(None, "--images-root"),
    iou: float = typer.Option(0.5, "--iou", help="IoU for a match."),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """mAP of a trained grid head against reference boxes."""
    with user_errors():
        from facestyle.detect.grid import load_grid_head
        from facestyle.heads import grid_detect as gd

        head, classes, _ = load_grid_head(head_path)
        _, data = _encode(annotations, images_root, head.anchors.tolist(), quiet or json)
        result = gd.evaluate(head, data, iou_threshold=iou)
        report = {
            "map": result["map"],
            "iou": iou,
            "images": len(data.items),
            "ap": {classes[k]: v for k, v in result["ap"].items() if k < len(classes)},
        }
        if json:
            print_json(report)
        else:
            out.print(f"mAP@{iou:g} {report['map']:.3f} on {report['images']} images")


@detect_head_app.command("detect")
def detect_head_detect(
    head_path: Path = typer.Argument(..., help="Head file from `detect-head train`."),
    images: list[Path] = typer.Argument(..., help="Images."),
    threshold: float = typer.Option(0.5, "--threshold", help="Minimum score."),
    draw: Path | None = typer.Option(None, "--draw", help="Write a copy with the boxes (one image)."),
    json: bool = JsonOpt,
) -> None:
    """Detect faces with a trained grid head (boxes and scores, no landmarks)."""
    with user_errors():
        from facestyle.errors import UsageError
        from facestyle.io.images import load_image
        from facestyle.models.registry import detector as make_detector

        if draw is not None and len(images) != 1:
            raise UsageError("--draw takes exactly one input image")
        det = make_detector("grid-head", weights=head_path, score_threshold=threshold)
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
