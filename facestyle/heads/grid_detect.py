"""A trainable single-stage grid detector head (the YOLO formulation) on frozen backbone features.

The image is resized to the backbone's input (150 x 150 for the dlib ResNet) and seen as an S x S grid
of cells (S = 8 at the tap used: the output of the third 128-channel residual block). For every cell
and anchor the head predicts ``objectness, x, y, w, h`` and class logits:

* ``x, y`` = sigmoid outputs, the box centre's position inside its cell (0..1 in cell units);
* ``w, h`` = ``anchor * exp(t)`` in cell units; without anchors there is one "anchor" of 1 x 1 cell,
  which is YOLOv2's parametrisation with a single neutral prior;
* ``objectness`` = sigmoid, trained towards 1 in the one cell/anchor responsible for a ground-truth
  box (the cell holding its centre; the anchor whose shape fits it best) and 0 elsewhere.

Why the frozen dlib ResNet and not a small trainable stem: its features are computed once and cached
(the head then trains in seconds on a CPU), and they come from a network trained on faces, so a face
detector needs only a light head. The cost is a fixed, coarse grid (cell = 150/8 ~ 19 px of the resized
image) and no fine-tuning of the features.

Decoding turns each cell's prediction into a scored box and thins them with the package's greedy
NMS (:func:`facestyle.detect.boxes.batched_nms`, per class).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facestyle.detect.base import DetectedFace
from facestyle.detect.boxes import batched_nms, box_area
from facestyle.errors import FacestyleError, UsageError
from facestyle.io.files import load_tensor_file

INPUT_SIZE = 150
TAP_BLOCK = 9  # index into DlibResNet.blocks: 128 channels, 8 x 8 at 150 px
HEAD_FORMAT = "facestyle-grid-head/1"


# ------------------------------------------------------------------------------------------ backbone


class DlibFeatureMap(nn.Module):
    """The dlib face ResNet cut after block ``TAP_BLOCK``: (N, 3, 150, 150) RGB 0..255 -> (N, 128, 8, 8).

    Frozen: used under ``inference_mode`` and never trained here.
    """

    def __init__(self, tap_block: int = TAP_BLOCK) -> None:
        super().__init__()
        from facestyle.models.dlib_resnet import load_dlib_resnet

        net = load_dlib_resnet(channels_last=False)
        self.register_buffer("mean_rgb", net.mean_rgb.clone())
        self.register_buffer("inv_scale", net.inv_scale.clone())
        self.stem = net.stem
        self.blocks = nn.Sequential(*list(net.blocks)[: tap_block + 1])
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.mean_rgb * -self.inv_scale, x, self.inv_scale)
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        return self.blocks(x)


def resize_for_backbone(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    import cv2

    if image.shape[:2] == (size, size):
        return image
    interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


@torch.inference_mode()
def feature_maps(backbone: DlibFeatureMap, images: Sequence[np.ndarray], batch: int = 32) -> torch.Tensor:
    """Backbone feature maps of RGB images of any size (each resized to 150 x 150)."""
    outs = []
    device = backbone.mean_rgb.device
    for start in range(0, len(images), batch):
        arr = np.stack([resize_for_backbone(im) for im in images[start : start + batch]])
        x = torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float()
        outs.append(backbone(x).cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


# ------------------------------------------------------------------------------------------ the head


class GridHead(nn.Module):
    """conv3x3 -> BN -> LeakyReLU -> conv1x1 to ``A * (5 + C)`` channels per cell."""

    def __init__(
        self,
        in_channels: int = 128,
        n_classes: int = 1,
        anchors: Sequence[Sequence[float]] | None = None,
        width: int = 128,
    ) -> None:
        super().__init__()
        anchors = [[1.0, 1.0]] if not anchors else [list(map(float, a)) for a in anchors]
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32))  # (A, 2) cell units
        self.n_classes = n_classes
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(width, len(anchors) * (5 + n_classes), 1),
        )
        # Start with low objectness everywhere (most cells are background), as RetinaNet's prior does.
        with torch.no_grad():
            last = self.body[-1]
            bias = last.bias.view(len(anchors), 5 + n_classes)
            bias[:, 0] = -4.0

    @property
    def n_anchors(self) -> int:
        return int(self.anchors.shape[0])

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) -> raw predictions (N, S, S, A, 5 + classes)."""
        out = self.body(feats)
        n, _, s1, s2 = out.shape
        return out.view(n, self.n_anchors, 5 + self.n_classes, s1, s2).permute(0, 3, 4, 1, 2)


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


def decode(
    pred: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw predictions of ONE image (S, S, A, 5 + C) -> (boxes in image pixels, scores, labels) after NMS.

    Score = objectness x class probability (objectness alone with one class).
    """
    s = pred.shape[0]
    w_img, h_img = image_size
    p = pred.detach().float().cpu()
    obj = torch.sigmoid(p[..., 0])
    if p.shape[-1] > 6:
        cls_prob = torch.softmax(p[..., 5:], dim=-1)
        best, label = cls_prob.max(dim=-1)
        score = obj * best
    else:
        score, label = obj, torch.zeros_like(obj, dtype=torch.long)
    jj, ii = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    cx = (ii[..., None] + torch.sigmoid(p[..., 1])) / s * w_img
    cy = (jj[..., None] + torch.sigmoid(p[..., 2])) / s * h_img
    bw = anchors[:, 0] * torch.exp(p[..., 3].clamp(max=6)) / s * w_img
    bh = anchors[:, 1] * torch.exp(p[..., 4].clamp(max=6)) / s * h_img
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1).reshape(-1, 4).numpy()
    score, label = score.reshape(-1).numpy(), label.reshape(-1).numpy()
    keep = batched_nms(boxes, score, label, iou_threshold=iou_threshold, score_threshold=score_threshold)
    return boxes[keep].astype(np.float32), score[keep].astype(np.float32), label[keep].astype(np.int64)


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


def write_csv(
    path: str | Path, rows: Sequence[tuple[str, Sequence[DetectedFace]]], label: str = "face"
) -> Path:
    """Write detector output as a training CSV (images without faces get an empty-box row)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "x1", "y1", "x2", "y2", "label", "score"])
        for image, faces in rows:
            if not faces:
                w.writerow([image, "", "", "", "", "", ""])
            for f in faces:
                w.writerow([image, *(f"{float(v):.2f}" for v in f.box), label, f"{float(f.score):.4f}"])
    return path


# ------------------------------------------------------------------------------------------ training


@dataclass
class GridTrainConfig:
    #: 10 epochs: on the LFW demo, 10/20/40 epochs gave held-out mAP@0.5 0.917/0.903/0.874 (train
    #: 0.929/0.965/0.977): longer training memorises the training faces.
    epochs: int = 10
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    anchors: list[list[float]] | None = None
    width: int = 128
    seed: int = 0


@dataclass
class EncodedSet:
    """Cached backbone features and encoded targets of an annotation set."""

    feats: torch.Tensor  # (N, C, S, S) float16
    mask: torch.Tensor
    tbox: torch.Tensor
    tcls: torch.Tensor
    sizes: list[tuple[int, int]]
    items: list[Annotation]


def load_and_encode(
    ann: AnnotationSet, backbone: DlibFeatureMap, anchors: torch.Tensor, progress: Callable | None = None
) -> EncodedSet:
    """Read every image once, run the frozen backbone, encode its boxes; unreadable images are skipped."""
    from facestyle.io.images import load_image

    feats, masks, tboxes, tclss, sizes, kept = [], [], [], [], [], []
    chunks = [ann.items[s : s + 32] for s in range(0, len(ann.items), 32)]
    for chunk in progress(chunks) if progress else chunks:
        images, ok = [], []
        for item in chunk:
            try:
                images.append(load_image(item.image))
                ok.append(item)
            except FacestyleError:
                continue
        if not images:
            continue
        fm = feature_maps(backbone, images)
        grid = fm.shape[-1]
        for im, item, f in zip(images, ok, fm, strict=True):
            size = (im.shape[1], im.shape[0])
            m, tb, tc = encode_targets(item.boxes, item.labels, size, grid, anchors)
            feats.append(f.half())
            masks.append(m)
            tboxes.append(tb)
            tclss.append(tc)
            sizes.append(size)
            kept.append(item)
    if not feats:
        raise UsageError("no readable image in the annotation file")
    return EncodedSet(
        torch.stack(feats), torch.stack(masks), torch.stack(tboxes), torch.stack(tclss), sizes, kept
    )


def train_grid_head(
    data: EncodedSet, n_classes: int, cfg: GridTrainConfig | None = None
) -> tuple[GridHead, dict]:
    """Adam on cached features; returns the head (eval mode) and a log of the epoch losses and time."""
    cfg = cfg or GridTrainConfig()
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
    out = []
    preds = head.eval()(data.feats.float())
    for pred, size in zip(preds, data.sizes, strict=True):
        out.append(decode(pred, head.anchors, size, score_threshold, iou_threshold))
    return out


def evaluate(
    head: GridHead, data: EncodedSet, iou_threshold: float = 0.5, score_threshold: float = 0.01
) -> dict:
    """mAP@``iou_threshold`` of the head against the annotation boxes (a low score threshold keeps the
    whole precision-recall curve)."""
    from facestyle.heads.map import ImageBoxes, mean_average_precision

    preds = predict_encoded(head, data, score_threshold=score_threshold)
    p = [ImageBoxes(b, lab, s) for b, s, lab in preds]
    t = [ImageBoxes(item.boxes, item.labels) for item in data.items]
    return mean_average_precision(p, t, iou_threshold)


# ------------------------------------------------------------------------------------------ files, detector


def save_grid_head(head: GridHead, classes: list[str], path: str | Path, metrics: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": HEAD_FORMAT,
            "backbone": {"name": "dlib-resnet-v1", "tap_block": TAP_BLOCK, "input_size": INPUT_SIZE},
            "classes": list(classes),
            "anchors": head.anchors.tolist(),
            "width": int(head.body[0].out_channels),
            "in_channels": int(head.body[0].in_channels),
            "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
            "metrics": metrics or {},
        },
        path,
    )
    return path


def load_grid_head(path: str | Path) -> tuple[GridHead, list[str], dict]:
    path = Path(path)
    ckpt = load_tensor_file(path, "head")
    if not isinstance(ckpt, dict) or ckpt.get("format") != HEAD_FORMAT:
        raise UsageError(f"{path}: not a facestyle grid detection head (expected format {HEAD_FORMAT})")
    head = GridHead(ckpt["in_channels"], len(ckpt["classes"]), ckpt["anchors"], ckpt["width"])
    head.load_state_dict(ckpt["state_dict"])
    return head.eval(), list(ckpt["classes"]), dict(ckpt.get("metrics", {}))


class GridHeadDetector:
    """A trained grid head behind the package's Detector interface (boxes and scores, no landmarks)."""

    name = "grid-head"

    def __init__(
        self, head_path: str | Path, score_threshold: float = 0.5, iou_threshold: float = 0.5
    ) -> None:
        self.head, self.classes, self.metrics = load_grid_head(head_path)
        self.backbone = DlibFeatureMap()
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold

    @torch.inference_mode()
    def detect_batch(self, images: list[np.ndarray]) -> list[list[DetectedFace]]:
        if not images:
            return []
        preds = self.head(feature_maps(self.backbone, images))
        out = []
        for image, pred in zip(images, preds, strict=True):
            boxes, scores, _ = decode(
                pred,
                self.head.anchors,
                (image.shape[1], image.shape[0]),
                self.score_threshold,
                self.iou_threshold,
            )
            out.append([DetectedFace(b, float(s), None) for b, s in zip(boxes, scores, strict=True)])
        return out

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        return self.detect_batch([image])[0]
