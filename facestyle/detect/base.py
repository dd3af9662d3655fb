"""What a face detector returns, and how callers pick one by name.

Every detector (MTCNN, Haar, a trained grid head) answers the same question: for an RGB image, a list
of faces, each a box, a confidence and (when the detector knows them) five landmarks. Keeping that
contract small is what lets alignment, the gallery and the CLI ignore which detector ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from facestyle.errors import UsageError

#: Order of the five landmarks everywhere in the package (MTCNN's order, image left/right).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class DetectedFace:
    """One face: ``box`` (x1, y1, x2, y2) in pixels, ``score`` in [0, 1], optional (5, 2) landmarks."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_dict(self) -> dict:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": None
            if self.landmarks is None
            else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }


@runtime_checkable
class Detector(Protocol):
    """A face detector. Images are ``(H, W, 3)`` uint8 RGB arrays."""

    name: str

    def detect(self, image: np.ndarray) -> list[DetectedFace]: ...

    def detect_batch(self, images: list[np.ndarray]) -> list[list[DetectedFace]]: ...


DETECTORS = ("mtcnn", "haar")


def get_detector(name: str = "mtcnn", device: str | None = None) -> Detector:
    """Build the detector called ``name`` (``mtcnn`` or ``haar``)."""
    if name == "mtcnn":
        from facestyle.detect.mtcnn import MTCNNDetector

        return MTCNNDetector(device=device)
    if name == "haar":
        from facestyle.detect.haar import HaarDetector

        return HaarDetector()
    raise UsageError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}")


def sort_faces(faces: list[DetectedFace]) -> list[DetectedFace]:
    """Largest face first: the usual "the person in the photo" when a caller wants one."""
    return sorted(faces, key=lambda f: f.area, reverse=True)
