"""mAP@0.5 on rankings small enough to work out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from facestyle.heads.map import ImageBoxes, average_precision, mean_average_precision


def _img(boxes, labels=None, scores=None) -> ImageBoxes:
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    labels = np.zeros(len(boxes), int) if labels is None else np.asarray(labels)
    return ImageBoxes(boxes, labels, None if scores is None else np.asarray(scores, float))


def test_average_precision_envelope() -> None:
    # Ranking TP, FP, TP with 2 ground truths: recall 0.5, 0.5, 1; precision 1, 0.5, 2/3.
    # Envelope: 1 up to recall 0.5, then 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3.
    assert average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(5 / 6)


def test_map_hand_computed() -> None:
    truths = [_img([[0, 0, 10, 10]]), _img([[0, 0, 10, 10], [50, 50, 60, 60]])]
    preds = [
        # image 0: a hit (0.9) and a duplicate of the same face (0.8): the duplicate is a false positive
        _img([[0, 0, 10, 10], [1, 0, 11, 10]], scores=[0.9, 0.8]),
        # image 1: a hit at IoU 0.68 (0.7) and a miss far away (0.95)
        _img([[0, 0, 10, 10.0], [100, 100, 110, 110]], scores=[0.7, 0.95]),
    ]
    preds[1].boxes[0] = [0, 0, 10, 6.8]  # IoU 68/100 = 0.68 >= 0.5
    # Ranking: 0.95 FP, 0.9 TP, 0.8 FP, 0.7 TP; 3 truths.
    # precision 0, 1/2, 1/3, 2/4; recall 0, 1/3, 1/3, 2/3. Envelope at recall 1/3: 1/2, at 2/3: 1/2.
    result = mean_average_precision(preds, truths)
    assert result["ap"][0] == pytest.approx(1 / 3 * 0.5 + 1 / 3 * 0.5)
    assert result["recall"][0] == pytest.approx(2 / 3)
    # A stricter IoU turns the 0.68 hit into a miss: TP only at rank 2 -> AP = 1/3 * 1/2.
    assert mean_average_precision(preds, truths, iou_threshold=0.7)["ap"][0] == pytest.approx(1 / 6)


def test_map_perfect_and_per_class() -> None:
    truths = [_img([[0, 0, 10, 10], [20, 20, 30, 30]], labels=[0, 1])]
    perfect = [_img([[0, 0, 10, 10], [20, 20, 30, 30]], labels=[0, 1], scores=[0.9, 0.8])]
    assert mean_average_precision(perfect, truths)["map"] == pytest.approx(1.0)
    # Right boxes, swapped classes: nothing matches in either class.
    swapped = [_img([[0, 0, 10, 10], [20, 20, 30, 30]], labels=[1, 0], scores=[0.9, 0.8])]
    assert mean_average_precision(swapped, truths)["map"] == 0.0
    # No predictions at all.
    assert mean_average_precision([_img(np.zeros((0, 4)), scores=[])], truths)["map"] == 0.0
