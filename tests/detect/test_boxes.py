"""IoU and greedy NMS against boxes whose overlaps were worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from facestyle.detect.boxes import (
    batched_nms,
    box_area,
    clip_boxes,
    iou,
    iou_matrix,
    nms,
    square_boxes,
    xywh_to_xyxy,
)


def test_iou_hand_computed() -> None:
    # 10x10 squares shifted by (5, 5): intersection 5*5 = 25, union 100 + 100 - 25 = 175.
    assert iou([0, 0, 10, 10], [5, 5, 15, 15]) == pytest.approx(25 / 175)
    # Half of a square: intersection 50, union 100.
    assert iou([0, 0, 10, 10], [0, 0, 10, 5]) == pytest.approx(0.5)
    # Identical boxes, disjoint boxes, boxes that only share an edge.
    assert iou([3, 4, 8, 9], [3, 4, 8, 9]) == pytest.approx(1.0)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0
    # 4x2 box inside a 4x4 one, offset vertically by 1: intersection 8, union 16.
    assert iou([0, 0, 4, 4], [0, 1, 4, 3]) == pytest.approx(0.5)
    # Rectangles crossing in a plus: 2x10 and 10x2 -> intersection 4, union 36.
    assert iou([4, 0, 6, 10], [0, 4, 10, 6]) == pytest.approx(4 / 36)


def test_iou_matrix_shape_modes_and_offset() -> None:
    a = np.array([[0, 0, 10, 10], [2, 2, 6, 6]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [100, 100, 110, 110]], dtype=np.float32)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    np.testing.assert_allclose(m[0], [1.0, 25 / 175, 0.0])
    # [2,2,6,6] (area 16) vs [5,5,15,15]: intersection 1x1 = 1, union 16 + 100 - 1 = 115.
    np.testing.assert_allclose(m[1], [16 / 100, 1 / 115, 0.0])
    # Intersection over the smaller box: a nested box overlaps its container fully.
    assert iou_matrix([0, 0, 10, 10], [2, 2, 6, 6], mode="min")[0, 0] == pytest.approx(1.0)
    # Inclusive pixels (MTCNN's original convention): [0,0,9,9] has 10x10 = 100 pixels.
    assert box_area([[0, 0, 9, 9]], offset=1)[0] == 100
    assert iou_matrix([0, 0, 9, 9], [5, 5, 14, 14], offset=1)[0, 0] == pytest.approx(25 / 175)
    # Empty inputs and degenerate boxes do not produce NaN.
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)
    assert iou_matrix([5, 5, 5, 5], [5, 5, 5, 5])[0, 0] == 0.0
    with pytest.raises(ValueError):
        iou_matrix([[0, 0, 1]], b)


BOXES = np.array(
    [
        [0, 0, 10, 10],  # 0: best of the first cluster
        [1, 0, 11, 10],  # 1: IoU with 0 = 90 / 110 = 0.818 -> suppressed
        [0, 0, 10, 5],  # 2: IoU with 0 = exactly 0.5 -> suppressed (the rule discards IoU >= 0.5)
        [20, 20, 30, 30],  # 3: a second object
        [21, 20, 31, 30],  # 4: duplicate of 3 (IoU 0.818), score 0.3
        [50, 50, 60, 60],  # 5: an isolated weak box, score 0.3
    ],
    dtype=np.float32,
)
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.3], dtype=np.float32)


def test_greedy_nms_hand_computed() -> None:
    assert nms(BOXES, SCORES, iou_threshold=0.5).tolist() == [0, 3, 5]
    # p <= threshold is dropped before suppression: the two 0.3 boxes go.
    assert nms(BOXES, SCORES, iou_threshold=0.5, score_threshold=0.3).tolist() == [0, 3]
    # A higher IoU threshold lets the exact-0.5 box 2 survive, but not the 0.818 duplicate.
    assert nms(BOXES, SCORES, iou_threshold=0.6).tolist() == [0, 2, 3, 5]
    # With everything above 0.9 IoU allowed, only nothing is suppressed.
    assert nms(BOXES, SCORES, iou_threshold=0.95).tolist() == [0, 1, 2, 3, 4, 5]
    assert nms(BOXES, SCORES, max_keep=2).tolist() == [0, 3]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def test_nms_suppression_is_against_kept_boxes_only() -> None:
    # A chain: B overlaps A (suppressed), C overlaps B but not A. Greedy NMS keeps C, because B was
    # removed before it could suppress anything.
    boxes = [[0, 0, 10, 10], [4, 0, 14, 10], [9, 0, 19, 10]]
    # IoU(A,B) = 60/140 = 0.43, IoU(B,C) = 50/150 = 0.33, IoU(A,C) = 10/190.
    assert nms(boxes, [0.9, 0.8, 0.7], iou_threshold=0.4).tolist() == [0, 2]
    assert nms(boxes, [0.9, 0.8, 0.7], iou_threshold=0.3).tolist() == [0, 2]
    assert nms(boxes, [0.7, 0.9, 0.8], iou_threshold=0.3).tolist() == [1]


def test_nms_min_mode_removes_nested_boxes() -> None:
    boxes = [[0, 0, 10, 10], [2, 2, 6, 6]]  # IoU 0.16, but the small one lies inside the big one
    assert nms(boxes, [0.9, 0.8], mode="union").tolist() == [0, 1]
    assert nms(boxes, [0.9, 0.8], mode="min").tolist() == [0]


def test_nms_agrees_with_torchvision_on_random_boxes() -> None:
    import torch
    from torchvision.ops import nms as tv_nms

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(300, 2))
    wh = rng.uniform(5, 40, size=(300, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = rng.uniform(size=300)
    ours = nms(boxes, scores, iou_threshold=0.5)
    theirs = tv_nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    # Random real-valued boxes never hit IoU == 0.5 exactly, where the two rules (>= vs >) differ.
    assert ours.tolist() == theirs.tolist()
    # Tensors are accepted as input too.
    assert nms(torch.from_numpy(boxes), torch.from_numpy(scores)).tolist() == ours.tolist()


def test_batched_nms_keeps_groups_apart() -> None:
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [50, 50, 60, 60]]
    scores = [0.9, 0.8, 0.95, 0.5]
    # Same group: box 1 is suppressed by box 0. Box 2 is in another group and survives; box 3 too.
    assert batched_nms(boxes, scores, groups=[0, 0, 1, 1]).tolist() == [2, 0, 3]
    # All in one group: box 2 (0.95) suppresses both 0 and 1 (0 vs 2 IoU 0.818).
    assert batched_nms(boxes, scores, groups=[7, 7, 7, 7]).tolist() == [2, 3]


def test_helpers() -> None:
    np.testing.assert_allclose(xywh_to_xyxy([[10, 20, 30, 40]]), [[10, 20, 40, 60]])
    np.testing.assert_allclose(clip_boxes([[-5, 3, 120, 90]], width=100, height=80), [[0, 3, 100, 80]])
    # A 10 wide, 4 high box centred at (5, 2) becomes a 10x10 square around the same centre.
    np.testing.assert_allclose(square_boxes([[0, 0, 10, 4]]), [[0, -3, 10, 7]])
