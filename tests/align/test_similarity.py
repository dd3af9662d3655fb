"""Similarity transforms: exact recovery, no reflection, and the dlib chip template measured on data."""

from __future__ import annotations

import numpy as np
import pytest

from facestyle.align.similarity import apply_transform, invert_transform, similarity_transform
from facestyle.align.templates import DLIB_150


def _matrix(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def test_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    truth = _matrix(1.7, 0.3, 12.0, -4.0)
    dst = apply_transform(truth, src)
    np.testing.assert_allclose(similarity_transform(src, dst), truth, atol=1e-9)


def test_never_reflects():
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    mirrored = src * np.array([-1.0, 1.0])
    m = similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_inverse_round_trip():
    m = _matrix(0.5, -1.1, 3.0, 8.0)
    pts = np.array([[1.0, 2.0], [30.0, -5.0]])
    np.testing.assert_allclose(apply_transform(invert_transform(m), apply_transform(m, pts)), pts, atol=1e-9)


def test_rejects_degenerate_input():
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), np.ones((5, 2)))
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def test_dlib_template_is_a_plausible_face():
    # Eyes level and above the nose, mouth below, left/right symmetric within 2 px of the chip centre.
    left_eye, right_eye, nose, mouth_l, mouth_r = DLIB_150
    assert abs(left_eye[1] - right_eye[1]) < 1.0
    assert left_eye[1] < nose[1] < mouth_l[1]
    centre = (left_eye[0] + right_eye[0]) / 2
    assert abs(centre - 74.5) < 2.0 and abs((mouth_l[0] + mouth_r[0]) / 2 - 74.5) < 2.0
