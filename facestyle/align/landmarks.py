"""Five landmarks for any face, also when its detector gives only a box.

Haar cascades and the grid head find boxes only. Their faces are aligned with landmarks placed by the
box: the median of MTCNN's landmarks inside its boxes on 150 LFW faces, made left/right symmetric.
Coarser than real landmarks, so embeddings of such faces are less accurate.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Landmark positions relative to the box (x, y in [0, 1]), in MTCNN's order.
BOX_RELATIVE_LANDMARKS = np.array(
    [[0.265, 0.389], [0.735, 0.389], [0.497, 0.589], [0.289, 0.759], [0.711, 0.759]], dtype=np.float64
)


class HasBox(Protocol):
    box: np.ndarray
    landmarks: np.ndarray | None


def landmarks_from_box(box: np.ndarray) -> np.ndarray:
    """``(5, 2)`` landmark estimates inside ``box`` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box).ravel()[:4])
    return np.array([x1, y1]) + BOX_RELATIVE_LANDMARKS * np.array([x2 - x1, y2 - y1])


def landmarks_of(face: HasBox) -> np.ndarray:
    """The face's five landmarks (float64), or estimates from its box when the detector gives none."""
    if face.landmarks is not None:
        return np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2)
    return landmarks_from_box(face.box)
