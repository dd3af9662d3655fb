"""MTCNN's three-stage cascade written out, with the package's NMS at every stage.

The networks are :mod:`facestyle.models.mtcnn`'s P-, R- and O-Nets (weights from facenet-pytorch's
wheel); this module is the glue between them, following the published
algorithm (Zhang et al., 2016) and facenet-pytorch's conventions closely enough that boxes and
landmarks agree with its ``MTCNN`` class (checked in tests/detect/test_mtcnn_stages.py):

1. P-Net, a fully convolutional 12 x 12 classifier, slides over an image pyramid (scales
   ``12 / min_face * factor**k`` while the short side stays >= 12 px). Every output cell above
   ``thresholds[0]`` is a 12 px window (stride 2) mapped back to the image, moved by P-Net's box
   regression. NMS within each scale (IoU 0.5), then across scales (0.7).
2. R-Net re-scores 24 x 24 crops of the squared candidates; those above ``thresholds[1]`` survive NMS
   (0.7) and are regressed again.
3. O-Net re-scores 48 x 48 crops, regresses the box a last time and places the five landmarks;
   candidates above ``thresholds[2]`` go through NMS measured over the smaller box ("min", 0.7), which
   also removes a small box nested in a bigger one.

Pixel conventions follow the original code: box regression and landmarks use inclusive widths
(``x2 - x1 + 1``), crops are taken at 1-based integer coordinates clipped to the image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from facestyle.detect.boxes import nms

STRIDE = 2
CELL = 12


def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales at which a ``min_face`` px face becomes P-Net's 12 px window, down to a 12 px image."""
    scale = 12.0 / min_face
    short = min(height, width) * scale
    scales = []
    while short >= 12:
        scales.append(scale)
        scale *= factor
        short *= factor
    return scales


def _area_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="area")


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


def windows_from_heatmap(reg: torch.Tensor, prob: torch.Tensor, scale: float, threshold: float) -> np.ndarray:
    """P-Net output of one image at one scale -> ``(K, 9)`` rows: x1 y1 x2 y2 score, 4 regressions.

    ``reg`` is (4, H, W), ``prob`` (H, W) the face probability. A cell (row r, col c) is the window
    whose top-left is at ``(STRIDE * c + 1) / scale`` in image pixels (floored, as the original code).
    """
    rows, cols = torch.nonzero(prob >= threshold, as_tuple=True)
    if rows.numel() == 0:
        return np.zeros((0, 9), np.float32)
    xy = torch.stack([cols, rows], dim=1).to(reg.dtype)
    q1 = ((STRIDE * xy + 1) / scale).floor()
    q2 = ((STRIDE * xy + CELL) / scale).floor()
    score = prob[rows, cols].unsqueeze(1)
    offsets = reg[:, rows, cols].T
    return torch.cat([q1, q2, score, offsets], dim=1).cpu().numpy()


def regress(boxes: np.ndarray, offsets: np.ndarray, inclusive: bool) -> np.ndarray:
    """Move box corners by ``offsets`` x box size (inclusive size for R-/O-Net, exclusive for P-Net)."""
    out = boxes.copy()
    extra = 1.0 if inclusive else 0.0
    w = boxes[:, 2] - boxes[:, 0] + extra
    h = boxes[:, 3] - boxes[:, 1] + extra
    out[:, 0] = boxes[:, 0] + offsets[:, 0] * w
    out[:, 1] = boxes[:, 1] + offsets[:, 1] * h
    out[:, 2] = boxes[:, 2] + offsets[:, 2] * w
    out[:, 3] = boxes[:, 3] + offsets[:, 3] * h
    return out


def squared(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square on its centre (the next network wants square crops)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def crops(image: torch.Tensor, boxes: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """``size`` x ``size`` normalised crops of the (1, 3, H, W) image; also which boxes gave a crop.

    Box corners are truncated to integers and clipped to the image (1-based, inclusive), so a box
    hanging over the border gives a crop of its visible part, stretched to ``size``.
    """
    h, w = image.shape[2:]
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x1, y1 = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    x2, y2 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    valid = (y2 > y1 - 1) & (x2 > x1 - 1)
    out = [
        _area_resize(image[:, :, y1[k] - 1 : y2[k], x1[k] - 1 : x2[k]], (size, size))
        for k in np.flatnonzero(valid)
    ]
    if not out:
        return torch.zeros(0, 3, size, size), valid
    return _normalise(torch.cat(out)), valid


@torch.inference_mode()
def run_cascade(
    image: np.ndarray,
    pnet: torch.nn.Module,
    rnet: torch.nn.Module,
    onet: torch.nn.Module,
    min_face: float = 20,
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    factor: float = 0.709,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image -> ``(N, 5)`` boxes with scores and ``(N, 5, 2)`` landmarks, best first."""
    empty = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    height, width = image.shape[:2]
    img = torch.from_numpy(np.array(image, dtype=np.uint8)).to(device).permute(2, 0, 1)[None].float()

    # Stage 1: P-Net over the pyramid.
    per_scale = []
    for scale in pyramid_scales(height, width, min_face, factor):
        resized = _normalise(_area_resize(img, (int(height * scale + 1), int(width * scale + 1))))
        reg, prob = pnet(resized)
        cand = windows_from_heatmap(reg[0], prob[0, 1], scale, thresholds[0])
        per_scale.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
    cand = np.concatenate(per_scale) if per_scale else np.zeros((0, 9), np.float32)
    if not len(cand):
        return empty
    cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
    boxes = regress(cand[:, :4], cand[:, 5:9], inclusive=False)
    boxes = squared(np.concatenate([boxes, cand[:, 4:5]], axis=1))

    # Stage 2: R-Net on 24 x 24 crops.
    data, valid = crops(img, boxes, 24)
    boxes = boxes[valid]
    if not len(boxes):
        return empty
    reg, prob = rnet(data)
    score = prob[:, 1].cpu().numpy()
    keep = score > thresholds[1]
    boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
    offsets = reg.cpu().numpy()[keep]
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = squared(regress(boxes[pick], offsets[pick], inclusive=True))
    if not len(boxes):
        return empty

    # Stage 3: O-Net on 48 x 48 crops, landmarks.
    data, valid = crops(img, boxes, 48)
    boxes = boxes[valid]
    if not len(boxes):
        return empty
    reg, marks, prob = onet(data)
    score = prob[:, 1].cpu().numpy()
    keep = score > thresholds[2]
    boxes = np.concatenate([boxes[keep, :4], score[keep, None]], axis=1)
    marks, offsets = marks.cpu().numpy()[keep], reg.cpu().numpy()[keep]
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    xs = w[:, None] * marks[:, :5] + boxes[:, 0:1] - 1
    ys = h[:, None] * marks[:, 5:10] + boxes[:, 1:2] - 1
    points = np.stack([xs, ys], axis=2)
    boxes = regress(boxes, offsets, inclusive=True)
    pick = nms(boxes[:, :4], boxes[:, 4], 0.7, mode="min", offset=1.0)
    return boxes[pick].astype(np.float32), points[pick].astype(np.float32)


@torch.inference_mode()
def onet_refine(
    image: np.ndarray, boxes: np.ndarray, onet: torch.nn.Module, device: torch.device | str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """MTCNN's last stage alone on boxes found by another detector (Haar): regressed boxes with O-Net's
    face score, and five landmarks. No threshold or NMS: the caller decides what to keep.

    Returns ``(N, 5)`` boxes (x1 y1 x2 y2 score) and ``(N, 5, 2)`` landmarks, in the input order.
    """
    if not len(boxes):
        return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
    img = torch.from_numpy(np.array(image, dtype=np.uint8)).to(device).permute(2, 0, 1)[None].float()
    sq = squared(np.concatenate([np.asarray(boxes, np.float64)[:, :4], np.zeros((len(boxes), 1))], axis=1))
    data, valid = crops(img, sq, 48)
    out_boxes = np.zeros((len(boxes), 5), np.float32)
    out_points = np.zeros((len(boxes), 5, 2), np.float32)
    if not valid.any():
        return out_boxes, out_points
    reg, marks, prob = onet(data.to(device))
    sq = sq[valid]
    w = sq[:, 2] - sq[:, 0] + 1
    h = sq[:, 3] - sq[:, 1] + 1
    marks = marks.cpu().numpy()
    points = np.stack(
        [w[:, None] * marks[:, :5] + sq[:, 0:1] - 1, h[:, None] * marks[:, 5:10] + sq[:, 1:2] - 1], 2
    )
    refined = regress(sq[:, :4], reg.cpu().numpy(), inclusive=True)
    out_boxes[valid] = np.concatenate([refined, prob[:, 1:2].cpu().numpy()], axis=1)
    out_points[valid] = points
    return out_boxes, out_points
