"""Training and evaluating the YOLO-style grid detection head on frozen backbone features.

The head, its box decoding, its file and the detector that runs it live in :mod:`facestyle.detect.grid`
(which also describes the grid and the predictions); this module adds what only training needs:
annotation files, target encoding, the loss, the training loop and mAP. The workflow, as library calls::

    from facestyle.heads import grid_detect as gd

    gd.write_csv("boxes.csv", gd.annotate(paths))           # a detector labels the training images
    run = gd.train_grid_detector("boxes.csv", eval_annotations="heldout.csv")
    run.save("grid.pt")                                       # a detector: registry.detector("grid.pt")
    gd.evaluate_grid_detector("grid.pt", "heldout.csv").to_dict()

Why the frozen dlib ResNet and not a small trainable stem: its features are computed once and cached
(the head then trains in seconds on a CPU), and they come from a network trained on faces, so a face
detector needs only a light head. The cost is a fixed, coarse grid (cell = 150/8 ~ 19 px of the resized
image) and no fine-tuning of the features.

Devices: the trunk runs on the requested device and hands back CPU feature maps; the head is trained
and scored on the CPU (it is small and its inputs are already computed), so no CPU tensor ever meets a
CUDA module. The saved head is on the CPU; the registry's detector moves it to its own device.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from facestyle.checks import check_optimiser, positive_finite, require
from facestyle.detect.boxes import box_area
from facestyle.detect.faces import Detector, Face
from facestyle.detect.grid import (
    TAP_BLOCK,
    FeatureMaps,
    GridHead,
    decode,
    feature_maps,
    load_grid_head,
    save_grid_head,
)
from facestyle.errors import FacestyleError, UsageError
from facestyle.heads.map import ImageBoxes, mean_average_precision
from facestyle.io.files import atomic_write
from facestyle.io.images import load_image
from facestyle.io.progress import Progress, no_progress


def dlib_feature_maps(device: str | None = None) -> FeatureMaps:
    """The frozen dlib ResNet trunk cut after block ``TAP_BLOCK``, on ``device`` (the process's one
    copy of the network): 150 x 150 RGB images -> (N, 128, 8, 8) float32 CPU maps."""
    import functools

    from facestyle.embed.embedder import load_network_embedder
    from facestyle.models.dlib_resnet import trunk_features

    net = load_network_embedder("dlib-resnet-v1", device).module
    return functools.partial(trunk_features, net, upto=TAP_BLOCK)


# ------------------------------------------------------------------------------------------ targets


def encode_targets(
    boxes: np.ndarray, labels: np.ndarray, image_size: tuple[int, int], grid: int, anchors: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground truth of one image -> (mask (S, S, A) bool, box targets (S, S, A, 4), class (S, S, A) long).

    ``image_size`` is (width, height) of the ORIGINAL image the boxes are in. Box targets are
    ``x, y`` in the cell (0..1) and ``log(w / anchor_w), log(h / anchor_h)`` in cell units. When two boxes
    claim the same cell and anchor, the larger one keeps it (the small one is usually a background face).
    """
    w_img, h_img = image_size
    n_anchor = anchors.shape[0]
    mask = torch.zeros(grid, grid, n_anchor, dtype=torch.bool)
    tbox = torch.zeros(grid, grid, n_anchor, 4)
    tcls = torch.zeros(grid, grid, n_anchor, dtype=torch.long)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    order = np.argsort(box_area(b), kind="stable")  # small first, so larger boxes overwrite
    for k in order:
        x1, y1, x2, y2 = b[k]
        x1, x2 = np.clip([x1, x2], 0, w_img)
        y1, y2 = np.clip([y1, y2], 0, h_img)
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue
        cx, cy = (x1 + x2) / 2 / w_img * grid, (y1 + y2) / 2 / h_img * grid
        bw, bh = (x2 - x1) / w_img * grid, (y2 - y1) / h_img * grid
        i, j = min(int(cx), grid - 1), min(int(cy), grid - 1)
        # Anchor whose shape (centred) overlaps the box best.
        inter = torch.minimum(anchors[:, 0], torch.tensor(bw)) * torch.minimum(
            anchors[:, 1], torch.tensor(bh)
        )
        a = int(torch.argmax(inter / (anchors[:, 0] * anchors[:, 1] + bw * bh - inter)))
        mask[j, i, a] = True
        tbox[j, i, a] = torch.tensor(
            [cx - i, cy - j, np.log(bw / float(anchors[a, 0])), np.log(bh / float(anchors[a, 1]))]
        )
        tcls[j, i, a] = int(labels[k])
    return mask, tbox, tcls


@dataclass
class LossWeights:
    coord: float = 5.0
    obj: float = 1.0
    noobj: float = 0.5
    cls: float = 1.0


def grid_loss(
    pred: torch.Tensor,
    mask: torch.Tensor,
    tbox: torch.Tensor,
    tcls: torch.Tensor,
    w: LossWeights | None = None,
) -> tuple[torch.Tensor, dict]:
    """YOLO loss, summed over cells and averaged over images.

    Objectness: binary cross-entropy, positives weighted ``obj``, negatives ``noobj``. Box: squared
    error on the sigmoid centre offsets and on the log-size, positives only, weighted ``coord``.
    Class: cross-entropy at positives (skipped with one class).
    """
    w = w or LossWeights()
    n = pred.shape[0]
    obj_logit = pred[..., 0]
    target = mask.float()
    bce = F.binary_cross_entropy_with_logits(obj_logit, target, reduction="none")
    loss_obj = (w.obj * bce * target).sum() / n
    loss_noobj = (w.noobj * bce * (1 - target)).sum() / n
    if mask.any():
        p = pred[mask]
        xy = torch.sigmoid(p[:, 1:3])
        loss_box = (
            w.coord
            * (((xy - tbox[mask][:, :2]) ** 2).sum() + ((p[:, 3:5] - tbox[mask][:, 2:]) ** 2).sum())
            / n
        )
        loss_cls = (
            w.cls * F.cross_entropy(p[:, 5:], tcls[mask], reduction="sum") / n
            if pred.shape[-1] > 6
            else pred.new_zeros(())
        )
    else:
        loss_box = loss_cls = pred.new_zeros(())
    total = loss_obj + loss_noobj + loss_box + loss_cls
    parts = {
        "obj": loss_obj.item(),
        "noobj": loss_noobj.item(),
        "box": loss_box.item(),
        "cls": loss_cls.item(),
    }
    return total, parts


# ------------------------------------------------------------------------------------------ annotations


@dataclass
class Annotation:
    """All boxes of one image."""

    image: Path
    boxes: np.ndarray  # (N, 4) x1 y1 x2 y2 pixels
    labels: np.ndarray  # (N,) int
    size: tuple[int, int] | None = None  # (width, height) when the file says so


@dataclass
class AnnotationSet:
    items: list[Annotation]
    classes: list[str] = field(default_factory=lambda: ["face"])

    def relabelled(self, classes: Sequence[str]) -> AnnotationSet:
        """The same boxes with labels indexing ``classes`` (a head's classes) instead of this file's
        own; a class the head does not know is a one-line error."""
        classes = list(classes)
        if self.classes == classes:
            return self
        unknown = [c for c in self.classes if c not in classes]
        if unknown:
            raise UsageError(f"annotation classes {unknown} are not among the head's classes {classes}")
        to_head = np.array([classes.index(c) for c in self.classes], np.int64)
        items = [dataclasses.replace(i, labels=to_head[i.labels]) for i in self.items]
        return AnnotationSet(items, classes)


def read_annotations(path: str | Path, images_root: str | Path | None = None) -> AnnotationSet:
    """CSV (``image,x1,y1,x2,y2[,label]``; a row with empty box = an image without objects) or COCO JSON.

    Relative image paths resolve against ``images_root`` (default: the annotation file's folder).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such annotation file")
    root = Path(images_root) if images_root else path.parent
    if path.suffix.lower() == ".json":
        return _read_coco(path, root)
    return _read_csv(path, root)


def _read_csv(path: Path, root: Path) -> AnnotationSet:
    per_image: dict[str, list[tuple[list[float], str]]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        needed = {"image", "x1", "y1", "x2", "y2"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise UsageError(f"{path}: CSV needs the columns image,x1,y1,x2,y2[,label]")
        for line, row in enumerate(reader, start=2):
            per_image.setdefault(row["image"], [])
            if not row["x1"]:
                continue
            try:
                box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
            except ValueError:
                raise UsageError(f"{path}:{line}: box coordinates must be numbers") from None
            per_image[row["image"]].append((box, row.get("label") or "face"))
    classes = sorted({lab for rows in per_image.values() for _, lab in rows}) or ["face"]
    index = {c: k for k, c in enumerate(classes)}
    items = [
        Annotation(
            image=(root / name) if not Path(name).is_absolute() else Path(name),
            boxes=np.array([b for b, _ in rows], np.float32).reshape(-1, 4),
            labels=np.array([index[lab] for _, lab in rows], np.int64),
        )
        for name, rows in per_image.items()
    ]
    return AnnotationSet(items, classes)


def _read_coco(path: Path, root: Path) -> AnnotationSet:
    try:
        data = json.loads(path.read_text())
        cats = sorted(data.get("categories") or [{"id": 1, "name": "face"}], key=lambda c: c["id"])
        cat_index = {c["id"]: k for k, c in enumerate(cats)}
        boxes: dict[int, list] = {img["id"]: [] for img in data["images"]}
        for ann in data.get("annotations", []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            boxes[ann["image_id"]].append(
                ([x, y, x + w, y + h], cat_index[ann.get("category_id", cats[0]["id"])])
            )
        items = []
        for img in data["images"]:
            rows = boxes[img["id"]]
            size = (int(img["width"]), int(img["height"])) if "width" in img and "height" in img else None
            items.append(
                Annotation(
                    image=root / img["file_name"],
                    boxes=np.array([b for b, _ in rows], np.float32).reshape(-1, 4),
                    labels=np.array([c for _, c in rows], np.int64),
                    size=size,
                )
            )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path}: not a COCO-style annotation file ({type(exc).__name__}: {exc})") from None
    return AnnotationSet(items, [c["name"] for c in cats])


class AnnotatedImage(NamedTuple):
    """A detector's faces in one image file, or why the file could not be read (then no faces)."""

    image: str
    faces: list[Face]
    error: str | None = None


def annotate(
    images: Sequence[str | Path],
    detector: str | Detector = "mtcnn",
    device: str | None = None,
    progress: Progress = no_progress,
) -> list[AnnotatedImage]:
    """Label image files with a detector's boxes (a registered name, a grid-head file or a detector
    object): a training set for the grid head. Paths come back absolute; an unreadable file gets its
    error instead of faces, and the others go on."""
    if isinstance(detector, str | Path):
        from facestyle.models.registry import detector as make_detector

        detector = make_detector(detector, device)
    rows = []
    for path in progress(list(images), len(images), "annotating"):
        image = str(Path(path).resolve())
        try:
            rows.append(AnnotatedImage(image, detector.detect(load_image(path))))
        except FacestyleError as exc:
            rows.append(AnnotatedImage(image, [], str(exc)))
    return rows


def write_csv(
    path: str | Path, rows: Sequence[AnnotatedImage | tuple[str, Sequence[Face]]], label: str = "face"
) -> Path:
    """Write detector output (from :func:`annotate`, or ``(image, faces)`` pairs) as a training CSV.

    Images without faces get an empty-box row (a negative example); images that could not be read
    are left out. The file appears whole or not at all.
    """

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image", "x1", "y1", "x2", "y2", "label", "score"])
            for row in rows:
                if getattr(row, "error", None):
                    continue
                image, faces = row[0], row[1]
                if not faces:
                    w.writerow([image, "", "", "", "", "", ""])
                for f in faces:
                    w.writerow([image, *(f"{float(v):.2f}" for v in f.box), label, f"{float(f.score):.4f}"])

    return atomic_write(path, write, ".csv")


def _annotation_set(annotations: str | Path | AnnotationSet, images_root: str | Path | None) -> AnnotationSet:
    if isinstance(annotations, AnnotationSet):
        return annotations
    return read_annotations(annotations, images_root)


# ------------------------------------------------------------------------------------------ training


@dataclass
class GridHeadOptions:
    """How the grid head is trained (stored in its file's report)."""

    #: 10 epochs: on the LFW demo, 10/20/40 epochs gave held-out mAP@0.5 0.917/0.903/0.874 (train
    #: 0.929/0.965/0.977): longer training memorises the training faces.
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    #: Anchor sizes (w, h) in cells; None: one 1 x 1 prior. :func:`parse_anchors` reads ``"w,h:w,h"``.
    anchors: list[list[float]] | None = None
    width: int = 128
    seed: int = 0

    def validate(self) -> None:
        """A one-line :class:`ParameterError` for the first option out of range."""
        check_optimiser(self.epochs, self.lr, self.weight_decay)
        require(
            self.batch_size >= 2,
            "{batch_size} must be at least 2 (batch normalisation)",
            batch_size=self.batch_size,
        )
        require(self.width >= 1, "{width} must be at least 1", width=self.width)
        require(
            self.anchors is None
            or all(len(a) == 2 and all(positive_finite(v) for v in a) for a in self.anchors),
            "{anchors} must be positive (w, h) pairs in cells",
            anchors=self.anchors,
        )


def parse_anchors(text: str) -> list[list[float]] | None:
    """``"2.5,3:1.5,2"`` -> ``[[2.5, 3.0], [1.5, 2.0]]`` (w, h in cells); ``""`` -> None (one 1 x 1
    prior). A malformed value is a :class:`ParameterError` naming ``anchors``."""
    if not text:
        return None
    try:
        anchors = [[float(v) for v in a.split(",")] for a in text.split(":")]
    except ValueError:
        anchors = []
    require(
        bool(anchors) and all(len(a) == 2 and all(positive_finite(v) for v in a) for a in anchors),
        "{anchors} must be positive w,h pairs in cells, like 2.5,3:1.5,2",
        anchors=text,
    )
    return anchors


@dataclass
class EncodedSet:
    """Cached backbone features and encoded targets of an annotation set."""

    feats: torch.Tensor  # (N, C, S, S) float16, CPU
    mask: torch.Tensor
    tbox: torch.Tensor
    tcls: torch.Tensor
    sizes: list[tuple[int, int]]
    items: list[Annotation]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, why it could not be read)


def load_and_encode(
    ann: AnnotationSet,
    features: FeatureMaps,
    anchors: torch.Tensor,
    progress: Progress = no_progress,
    batch: int = 32,
) -> EncodedSet:
    """Read every image once, run the frozen backbone, encode its boxes; unreadable images are skipped
    (and listed in ``skipped``)."""
    feats, masks, tboxes, tclss, sizes, kept, skipped = [], [], [], [], [], [], []
    images: list[np.ndarray] = []
    pending: list[Annotation] = []

    def flush() -> None:
        if not images:
            return
        fm = feature_maps(features, images)
        grid = fm.shape[-1]
        for im, item, f in zip(images, pending, fm, strict=True):
            size = (im.shape[1], im.shape[0])
            m, tb, tc = encode_targets(item.boxes, item.labels, size, grid, anchors)
            feats.append(f.half())
            masks.append(m)
            tboxes.append(tb)
            tclss.append(tc)
            sizes.append(size)
            kept.append(item)
        images.clear()
        pending.clear()

    for item in progress(ann.items, len(ann.items), "grid-head features"):
        try:
            images.append(load_image(item.image))
            pending.append(item)
        except FacestyleError as exc:
            skipped.append((str(item.image), str(exc)))
        if len(images) >= batch:
            flush()
    flush()
    if not feats:
        raise UsageError("no readable image in the annotation file")
    return EncodedSet(
        torch.stack(feats), torch.stack(masks), torch.stack(tboxes), torch.stack(tclss), sizes, kept, skipped
    )


def fit_grid_head(
    data: EncodedSet, n_classes: int, options: GridHeadOptions | None = None
) -> tuple[GridHead, dict]:
    """AdamW with a one-cycle schedule on cached features, on the CPU; returns the head (eval mode)
    and a log: ``train_seconds`` and the mean ``loss`` of every epoch."""
    cfg = options or GridHeadOptions()
    cfg.validate()
    if len(data.feats) < 2:
        raise UsageError("the grid head needs at least 2 readable training images (batch normalisation)")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    head = GridHead(data.feats.shape[1], n_classes, cfg.anchors, cfg.width)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, -(-len(data.feats) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    history = []
    t0 = time.perf_counter()
    head.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(data.feats), generator=gen)
        total, count = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            pred = head(data.feats[idx].float())
            loss, _ = grid_loss(pred, data.mask[idx], data.tbox[idx], data.tcls[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history.append(total / max(count, 1))
    return head.eval(), {"train_seconds": time.perf_counter() - t0, "loss": history}


@torch.inference_mode()
def predict_encoded(
    head: GridHead, data: EncodedSet, score_threshold: float = 0.3, iou_threshold: float = 0.5
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(boxes, scores, labels) of every image of ``data`` (CPU features into the head, wherever it is)."""
    device = head.anchors.device
    preds = head.eval()(data.feats.float().to(device))
    return [
        decode(pred, head.anchors, size, score_threshold, iou_threshold)
        for pred, size in zip(preds, data.sizes, strict=True)
    ]


def evaluate(
    head: GridHead, data: EncodedSet, iou_threshold: float = 0.5, score_threshold: float = 0.01
) -> dict:
    """mAP@``iou_threshold`` of the head against the annotation boxes (a low score threshold keeps the
    whole precision-recall curve): ``{"map", "ap": {label: AP}, "recall": {label: max recall}}``."""
    preds = predict_encoded(head, data, score_threshold=score_threshold)
    p = [ImageBoxes(b, lab, s) for b, s, lab in preds]
    t = [ImageBoxes(item.boxes, item.labels) for item in data.items]
    return mean_average_precision(p, t, iou_threshold)


# ------------------------------------------------------------------------------------------ workflow


@dataclass
class GridHeadTraining:
    """A trained grid head, its classes and its report (what ``detect-head train --json`` prints)."""

    head: GridHead
    classes: list[str]
    report: dict
    losses: list[float]  # mean training loss of each epoch
    seconds: float  # the whole call: reading, features, training, scoring

    def to_dict(self) -> dict:
        return {**self.report, "seconds": round(self.seconds, 2)}

    def save(self, path: str | Path) -> Path:
        """Write the head file atomically (a detector: ``registry.detector(path)``)."""
        return save_grid_head(self.head, self.classes, path, self.to_dict())


def train_grid_detector(
    annotations: str | Path | AnnotationSet,
    *,
    eval_annotations: str | Path | AnnotationSet | None = None,
    images_root: str | Path | None = None,
    options: GridHeadOptions | None = None,
    device: str | None = None,
    progress: Progress = no_progress,
) -> GridHeadTraining:
    """Train the grid head on an annotation file (CSV or COCO JSON, see :func:`read_annotations`) with
    frozen dlib ResNet features; report mAP@0.5 on the training images and, with
    ``eval_annotations``, on held-out ones. Relative image paths resolve against ``images_root``."""
    from facestyle.device import resolve_device

    t0 = time.perf_counter()
    opts = options or GridHeadOptions()
    opts.validate()
    resolve_device(device)
    train_ann = _annotation_set(annotations, images_root)
    held_ann = None
    if eval_annotations is not None:
        held_ann = _annotation_set(eval_annotations, images_root).relabelled(train_ann.classes)
    features = dlib_feature_maps(device)
    anchors = GridHead(anchors=opts.anchors).anchors
    t_features = time.perf_counter()
    train_set = load_and_encode(train_ann, features, anchors, progress)
    held = load_and_encode(held_ann, features, anchors, progress) if held_ann is not None else None
    feature_seconds = time.perf_counter() - t_features  # reading and running the trunk, both sets
    head, log = fit_grid_head(train_set, len(train_ann.classes), opts)
    report = {
        "train_images": len(train_set.items),
        "train_seconds": round(log["train_seconds"], 2),
        "feature_seconds": round(feature_seconds, 2),
        "final_loss": round(log["loss"][-1], 4),
        "map50_train": evaluate(head, train_set)["map"],
        "classes": list(train_ann.classes),
        "options": dataclasses.asdict(opts),
        "skipped": [{"image": p, "reason": r} for p, r in train_set.skipped],
    }
    if held is not None:
        report["map50_eval"] = evaluate(head, held)["map"]
        report["eval_images"] = len(held.items)
        report["skipped"] += [{"image": p, "reason": r} for p, r in held.skipped]
    return GridHeadTraining(head, list(train_ann.classes), report, log["loss"], time.perf_counter() - t0)


@dataclass
class GridHeadEvaluation:
    """mAP of a grid head against reference boxes (what ``detect-head eval --json`` prints)."""

    map: float
    iou: float
    images: int
    ap: dict[str, float]  # per class name
    recall: dict[str, float]  # highest recall reached, per class name
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "map": self.map,
            "iou": self.iou,
            "images": self.images,
            "ap": dict(self.ap),
            "recall": dict(self.recall),
            "skipped": [{"image": p, "reason": r} for p, r in self.skipped],
        }


def evaluate_grid_detector(
    head_path: str | Path,
    annotations: str | Path | AnnotationSet,
    *,
    images_root: str | Path | None = None,
    iou: float = 0.5,
    device: str | None = None,
    progress: Progress = no_progress,
) -> GridHeadEvaluation:
    """mAP@``iou`` of a trained head file against an annotation file's boxes."""
    from facestyle.device import resolve_device

    require(0 < iou <= 1, "{iou} must be above 0 and at most 1", iou=iou)
    resolve_device(device)
    head, classes, _ = load_grid_head(head_path)
    ann = _annotation_set(annotations, images_root).relabelled(classes)
    data = load_and_encode(ann, dlib_feature_maps(device), head.anchors, progress)
    result = evaluate(head, data, iou_threshold=iou)
    return GridHeadEvaluation(
        result["map"],
        iou,
        len(data.items),
        {classes[k]: v for k, v in result["ap"].items()},
        {classes[k]: v for k, v in result["recall"].items()},
        data.skipped,
    )
