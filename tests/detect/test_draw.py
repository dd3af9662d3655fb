"""Drawing boxes and landmarks: pixels change where the box is, and nowhere far from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facestyle.detect.draw import LANDMARK_COLORS, draw_faces
from facestyle.detect.faces import Face
from facestyle.errors import ImageError
from facestyle.io.images import load_image, save_image


def test_draw_box_and_landmarks_pixels() -> None:
    image = np.zeros((100, 120, 3), np.uint8)
    face = Face(
        box=np.array([20, 30, 60, 80], np.float32),
        score=0.9,
        landmarks=np.array([[30, 45], [50, 45], [40, 55], [32, 68], [48, 68]], np.float32),
    )
    out = draw_faces(image, [face], color=(255, 200, 0), thickness=1, show_scores=False)
    assert image.sum() == 0, "the input must not be modified"
    # Box edges carry the colour; the centre of an edge is exact with thickness 1.
    assert tuple(out[30, 40]) == (255, 200, 0)  # top edge
    assert tuple(out[80, 40]) == (255, 200, 0)  # bottom edge
    assert tuple(out[55, 20]) == (255, 200, 0)  # left edge
    assert tuple(out[55, 60]) == (255, 200, 0)  # right edge
    # Landmark dots in their colours (eyes green, nose blue, mouth red).
    for (x, y), color in zip(face.landmarks.astype(int), LANDMARK_COLORS, strict=True):
        assert tuple(out[y, x]) == color
    # Far from the face nothing changed.
    assert out[:20].sum() == 0 and out[:, 70:].sum() == 0


def test_drawing_saved_and_read_back(tmp_path: Path) -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    face = Face(box=np.array([10, 10, 50, 50], np.float32), score=0.75, landmarks=None)
    path = save_image(tmp_path / "out.png", draw_faces(image, [face], thickness=2))
    back = load_image(path)
    assert back.shape == (64, 64, 3)
    np.testing.assert_array_equal(back, draw_faces(image, [face], thickness=2))
    assert not np.array_equal(back, image)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        draw_faces(np.zeros((10, 10), np.uint8), [])
    with pytest.raises(ImageError):
        save_image(tmp_path / "out.unknownext", np.zeros((4, 4, 3), np.uint8))
