"""Mean average precision at an IoU threshold (PASCAL VOC's all-point interpolation).

For each class, every predicted box of every image is ranked by score; going down the ranking, a
prediction is a true positive when it overlaps a not-yet-matched ground-truth box of its image and
class with IoU >= ``iou_threshold`` (the best-overlapping one), else a false positive (including a
second detection of an already matched box). AP is the area under the precision-recall curve after
making precision monotonically decreasing (the VOC 2010+ rule); mAP is the mean over the classes that
have ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facestyle.detect.boxes import iou_matrix


@dataclass
class ImageBoxes:
    """Boxes of one image: ``(N, 4)`` x1y1x2y2, scores (predictions only) and integer labels."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated area under a PR curve given in ranking order."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # precision envelope: max precision at recall >= r
    steps = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def match_class(
    predictions: Sequence[ImageBoxes], truths: Sequence[ImageBoxes], label: int, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, true-positive flags) of every prediction of ``label`` in ranking order, and #ground truths."""
    entries: list[tuple[float, int, np.ndarray]] = []
    gts: list[np.ndarray] = []
    for k, (pred, truth) in enumerate(zip(predictions, truths, strict=True)):
        gts.append(np.asarray(truth.boxes, float).reshape(-1, 4)[np.asarray(truth.labels) == label])
        sel = np.asarray(pred.labels) == label
        for box, score in zip(
            np.asarray(pred.boxes, float).reshape(-1, 4)[sel], np.asarray(pred.scores)[sel], strict=True
        ):
            entries.append((float(score), k, box))
    n_gt = sum(len(g) for g in gts)
    entries.sort(key=lambda e: -e[0])  # stable: ties keep image order
    used = [np.zeros(len(g), bool) for g in gts]
    tp = np.zeros(len(entries), bool)
    for n, (_, k, box) in enumerate(entries):
        if not len(gts[k]):
            continue
        overlaps = iou_matrix(box, gts[k])[0]
        overlaps[used[k]] = -1.0
        best = int(np.argmax(overlaps))
        if overlaps[best] >= iou_threshold:
            used[k][best] = True
            tp[n] = True
    return np.array([e[0] for e in entries]), tp, n_gt


def mean_average_precision(
    predictions: Sequence[ImageBoxes], truths: Sequence[ImageBoxes], iou_threshold: float = 0.5
) -> dict:
    """``{"map": float, "ap": {label: AP}, "recall": {label: max recall}}`` over classes with truths."""
    labels = sorted({int(v) for t in truths for v in np.asarray(t.labels).ravel()})
    ap, max_recall = {}, {}
    for label in labels:
        _, tp, n_gt = match_class(predictions, truths, label, iou_threshold)
        if n_gt == 0:
            continue
        ctp = np.cumsum(tp)
        recall = ctp / n_gt
        precision = ctp / np.arange(1, len(tp) + 1)
        ap[label] = average_precision(recall, precision) if len(tp) else 0.0
        max_recall[label] = float(recall[-1]) if len(tp) else 0.0
    return {"map": float(np.mean(list(ap.values()))) if ap else float("nan"), "ap": ap, "recall": max_recall}
