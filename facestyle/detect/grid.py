"""The YOLO-style grid detection head at inference: the module, box decoding, its file, the detector.

The image is resized to the backbone's input (150 x 150 for the dlib ResNet) and seen as an S x S grid
of cells (S = 8 at the tap used: the output of the third 128-channel residual block). For every cell
and anchor the head predicts ``objectness, x, y, w, h`` and class logits:

* ``x, y`` = sigmoid outputs, the box centre's position inside its cell (0..1 in cell units);
* ``w, h`` = ``anchor * exp(t)`` in cell units; without anchors there is one "anchor" of 1 x 1 cell,
  which is YOLOv2's parametrisation with a single neutral prior;
* ``objectness`` = sigmoid, trained towards 1 in the one cell/anchor responsible for a ground-truth
  box (the cell holding its centre; the anchor whose shape fits it best) and 0 elsewhere.

Decoding turns each cell's prediction into a scored box and thins them with the package's greedy
NMS (:func:`facestyle.detect.boxes.batched_nms`, per class). Training lives in
:mod:`facestyle.heads.grid_detect`; the registry's ``grid-head`` entry builds :class:`GridHeadDetector`
from a head file and the dlib ResNet trunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facestyle.detect.boxes import batched_nms
from facestyle.detect.faces import Face, sort_faces
from facestyle.errors import UsageError
from facestyle.io.files import load_tensor_file, save_tensor_file

INPUT_SIZE = 150
TAP_BLOCK = 9  # index into DlibResNet.blocks: 128 channels, 8 x 8 at 150 px
HEAD_FORMAT = "facestyle-grid-head/1"

#: Backbone feature maps of a batch of ``(N, INPUT_SIZE, INPUT_SIZE, 3)`` uint8 RGB images.
FeatureMaps = Callable[[np.ndarray], torch.Tensor]


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


def resize_for_backbone(image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The whole image squeezed to ``size`` x ``size`` (area averaging when shrinking)."""
    import cv2

    if image.shape[:2] == (size, size):
        return image
    interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def feature_maps(features: FeatureMaps, images: Sequence[np.ndarray], size: int = INPUT_SIZE) -> torch.Tensor:
    """Backbone feature maps of RGB images of any size (each resized to ``size`` x ``size``)."""
    if not len(images):
        return torch.zeros(0)
    return features(np.stack([resize_for_backbone(im, size) for im in images]))


def decode(
    pred: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw predictions of ONE image (S, S, A, 5 + C) -> (boxes in image pixels, scores, labels) after NMS.

    ``image_size`` is (width, height). Score = objectness x class probability (objectness alone with
    one class).
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
    anchors = anchors.detach().float().cpu()
    jj, ii = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    cx = (ii[..., None] + torch.sigmoid(p[..., 1])) / s * w_img
    cy = (jj[..., None] + torch.sigmoid(p[..., 2])) / s * h_img
    bw = anchors[:, 0] * torch.exp(p[..., 3].clamp(max=6)) / s * w_img
    bh = anchors[:, 1] * torch.exp(p[..., 4].clamp(max=6)) / s * h_img
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=-1).reshape(-1, 4).numpy()
    score, label = score.reshape(-1).numpy(), label.reshape(-1).numpy()
    keep = batched_nms(boxes, score, label, iou_threshold=iou_threshold, score_threshold=score_threshold)
    return boxes[keep].astype(np.float32), score[keep].astype(np.float32), label[keep].astype(np.int64)


# ------------------------------------------------------------------------------------------ the head file


def save_grid_head(head: GridHead, classes: list[str], path: str | Path, metrics: dict | None = None) -> Path:
    """Write the head (tensors, class names and metrics; readable with ``weights_only=True``) atomically."""
    return save_tensor_file(
        path,
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
    )


def is_grid_head_file(path: str | Path) -> bool:
    """Whether ``path`` is a readable grid-head file (its format marker checked)."""
    try:
        ckpt = load_tensor_file(path, "grid head")
    except UsageError:
        return False
    return isinstance(ckpt, dict) and ckpt.get("format") == HEAD_FORMAT


def load_grid_head(path: str | Path) -> tuple[GridHead, list[str], dict]:
    """(head in eval mode, class names, metrics) of a file written by :func:`save_grid_head`."""
    path = Path(path)
    ckpt = load_tensor_file(path, "grid head")
    if not isinstance(ckpt, dict) or ckpt.get("format") != HEAD_FORMAT:
        raise UsageError(f"{path}: not a facestyle grid detection head (expected format {HEAD_FORMAT})")
    head = GridHead(ckpt["in_channels"], len(ckpt["classes"]), ckpt["anchors"], ckpt["width"])
    head.load_state_dict(ckpt["state_dict"])
    return head.eval(), list(ckpt["classes"]), dict(ckpt.get("metrics", {}))


# ------------------------------------------------------------------------------------------ the detector


class GridHeadDetector:
    """A trained grid head behind the package's Detector interface (boxes and scores, no landmarks).

    ``features`` gives the frozen backbone's maps of 150 x 150 images (the registry passes the dlib
    ResNet trunk, on the detector's device).
    """

    name = "grid-head"

    def __init__(
        self,
        head: GridHead,
        features: FeatureMaps,
        classes: Sequence[str] = ("face",),
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
    ) -> None:
        self.head = head.eval()
        self.features = features
        self.classes = list(classes)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold

    @torch.inference_mode()
    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        if not images:
            return []
        maps = feature_maps(self.features, images)
        preds = self.head(maps.to(self.head.anchors.device))
        out = []
        for image, pred in zip(images, preds, strict=True):
            boxes, scores, _ = decode(
                pred,
                self.head.anchors,
                (image.shape[1], image.shape[0]),
                self.score_threshold,
                self.iou_threshold,
            )
            out.append(sort_faces([Face(b, float(s), None) for b, s in zip(boxes, scores, strict=True)]))
        return out

    def detect(self, image: np.ndarray) -> list[Face]:
        return self.detect_batch([image])[0]
