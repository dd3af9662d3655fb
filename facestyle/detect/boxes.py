"""Box arithmetic shared by every detector: area, IoU, greedy non-maximum suppression.

Detectors disagree on many things but they all end the same way: a pile of overlapping candidate boxes
with scores that must be thinned to one box per object. Doing that in one place means the Haar cascade,
MTCNN's three stages and the trainable grid head all suppress duplicates by the same rule, and a test
of this module covers all of them.

Conventions: boxes are ``(N, 4)`` arrays of ``x1, y1, x2, y2`` in continuous pixel coordinates, so a
box's width is ``x2 - x1`` (no ``+ 1``). ``offset=1`` switches to the inclusive-pixel convention of the
original MTCNN code (width ``x2 - x1 + 1``) for the few callers that want to reproduce it bit for bit.

The suppression rule is the classic greedy one: drop candidates whose score is ``<= score_threshold``,
then repeatedly keep the best remaining box and discard every other box whose overlap with it is
``>= iou_threshold``. The overlap is intersection over union (``mode="union"``) or, as MTCNN's last stage
uses, intersection over the smaller box (``mode="min"``), which also removes a small box nested in a
large one.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

OverlapMode = Literal["union", "min"]


def as_boxes(boxes: object) -> np.ndarray:
    """``boxes`` as a float64 ``(N, 4)`` array; accepts lists, numpy arrays and torch tensors."""
    if hasattr(boxes, "detach"):  # torch.Tensor, without importing torch here
        boxes = boxes.detach().cpu().numpy()
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {arr.shape}")
    return arr


def box_area(boxes: object, offset: float = 0.0) -> np.ndarray:
    """Areas of ``(N, 4)`` boxes; degenerate (inverted) boxes have area 0."""
    b = as_boxes(boxes)
    w = np.clip(b[:, 2] - b[:, 0] + offset, 0.0, None)
    h = np.clip(b[:, 3] - b[:, 1] + offset, 0.0, None)
    return w * h


def intersection_matrix(a: object, b: object, offset: float = 0.0) -> np.ndarray:
    """``(N, M)`` intersection areas between every box of ``a`` and every box of ``b``."""
    a, b = as_boxes(a), as_boxes(b)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1 + offset, 0.0, None) * np.clip(y2 - y1 + offset, 0.0, None)


def iou_matrix(a: object, b: object, mode: OverlapMode = "union", offset: float = 0.0) -> np.ndarray:
    """``(N, M)`` overlap between boxes of ``a`` and ``b``: IoU, or intersection over the smaller area.

    Pairs whose denominator is zero (two empty boxes) get overlap 0 rather than NaN.
    """
    a, b = as_boxes(a), as_boxes(b)
    inter = intersection_matrix(a, b, offset)
    area_a, area_b = box_area(a, offset), box_area(b, offset)
    if mode == "union":
        denom = area_a[:, None] + area_b[None, :] - inter
    elif mode == "min":
        denom = np.minimum(area_a[:, None], area_b[None, :])
    else:
        raise ValueError(f"unknown overlap mode {mode!r}; use 'union' or 'min'")
    out = np.zeros_like(inter)
    np.divide(inter, denom, out=out, where=denom > 0)
    return out


def iou(a: object, b: object) -> float:
    """IoU of two single boxes."""
    return float(iou_matrix(a, b)[0, 0])


def nms(
    boxes: object,
    scores: object,
    iou_threshold: float = 0.5,
    score_threshold: float | None = None,
    mode: OverlapMode = "union",
    offset: float = 0.0,
    max_keep: int | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression; returns the indices kept, best score first.

    Ties in score keep the earlier index (a stable sort), so the result is deterministic.
    """
    b = as_boxes(boxes)
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    raw = np.asarray(scores).reshape(-1)
    if raw.shape[0] != b.shape[0]:
        raise ValueError(f"{b.shape[0]} boxes but {raw.shape[0]} scores")
    candidates = np.arange(b.shape[0])
    if score_threshold is not None:
        # Compared in the scores' own precision: a float32 0.3 is not "above" a threshold of 0.3.
        dtype = raw.dtype if np.issubdtype(raw.dtype, np.floating) else np.float64
        candidates = candidates[raw > np.asarray(score_threshold, dtype=dtype)]
    s = raw.astype(np.float64)
    order = candidates[np.argsort(-s[candidates], kind="stable")]
    areas = box_area(b, offset)
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if max_keep is not None and len(keep) >= max_keep:
            break
        rest = order[1:]
        if not rest.size:
            break
        inter = intersection_matrix(b[best], b[rest], offset)[0]
        if mode == "union":
            denom = areas[best] + areas[rest] - inter
        elif mode == "min":
            denom = np.minimum(areas[best], areas[rest])
        else:
            raise ValueError(f"unknown overlap mode {mode!r}; use 'union' or 'min'")
        overlap = np.zeros_like(inter)
        np.divide(inter, denom, out=overlap, where=denom > 0)
        order = rest[overlap < iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: object,
    scores: object,
    groups: object,
    iou_threshold: float = 0.5,
    score_threshold: float | None = None,
    mode: OverlapMode = "union",
    offset: float = 0.0,
) -> np.ndarray:
    """NMS run separately within each group (class, or image of a batch); indices sorted by score.

    Boxes of different groups never suppress each other: a face box does not remove an overlapping
    box of another class, and candidates from image 3 of a batch do not touch those of image 4.
    """
    b = as_boxes(boxes)
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    if hasattr(groups, "detach"):
        groups = groups.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    g = np.asarray(groups).reshape(-1)
    if not (b.shape[0] == s.shape[0] == g.shape[0]):
        raise ValueError("boxes, scores and groups must have the same length")
    kept: list[np.ndarray] = []
    for group in np.unique(g):
        idx = np.flatnonzero(g == group)
        local = nms(b[idx], s[idx], iou_threshold, score_threshold, mode, offset)
        kept.append(idx[local])
    if not kept:
        return np.zeros(0, dtype=np.int64)
    allkept = np.concatenate(kept)
    return allkept[np.argsort(-s[allkept], kind="stable")]


def clip_boxes(boxes: object, width: int, height: int) -> np.ndarray:
    """Boxes clipped to the image ``[0, width] x [0, height]``."""
    b = as_boxes(boxes).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    return b


def xywh_to_xyxy(boxes: object) -> np.ndarray:
    """``x, y, w, h`` (top-left corner and size, OpenCV's convention) to ``x1, y1, x2, y2``."""
    b = as_boxes(boxes).copy()
    b[:, 2] += b[:, 0]
    b[:, 3] += b[:, 1]
    return b


def square_boxes(boxes: object) -> np.ndarray:
    """Boxes grown to squares around the same centre (side = the longer side), as MTCNN's stages need."""
    b = as_boxes(boxes).copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    cx, cy = b[:, 0] + w / 2, b[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)
