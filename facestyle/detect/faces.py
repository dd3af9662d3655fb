"""What a face detector returns, the Detector interface, and the rules for picking one face.

Every detector (MTCNN, Haar, a trained grid head) answers the same question: for an RGB image, a list
of faces, each a box, a confidence and (when the detector knows them) five landmarks. The same
:class:`Face` later carries its embedding, so detection, the pipeline, the gallery and the CLI all pass
one type around and turn it into JSON one way (:meth:`Face.to_dict`).

Detectors are built by name through the model registry (:func:`facestyle.models.registry.detector`);
this package only holds the algorithms, never the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from facestyle.errors import NoFaceError, ParameterError, SeveralFacesError

#: Order of the five landmarks everywhere in the package (MTCNN's order, image left/right).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

#: Which face of a photo stands for "the person in it" when one is needed.
#: ``largest``: the biggest box (a portrait, an enrolment photo). ``central``: among faces at least a
#: quarter the area of the largest, the one nearest the image centre (LFW-style photos, where the
#: labelled person is centred and a bystander may be as large).
FaceChoice = Literal["largest", "central"]
FACE_CHOICES = ("largest", "central")

#: Decimals of pixel coordinates in every JSON output (boxes and landmarks), and of scores.
COORD_DECIMALS = 2
SCORE_DECIMALS = 4


def rounded(values: object, decimals: int = COORD_DECIMALS) -> list:
    """Plain nested lists of floats rounded for JSON (boxes, landmarks)."""
    arr = np.asarray(values, dtype=np.float64)
    return np.round(arr, decimals).tolist()


@dataclass
class Face:
    """One face: ``box`` (x1, y1, x2, y2) pixels, ``score`` in [0, 1], optional ``(5, 2)`` landmarks
    (order :data:`LANDMARK_NAMES`), once embedded its unit-length ``embedding``, and how it was found
    (``found_by``: ``detector``, ``padded`` or ``whole``; see :mod:`facestyle.detect.finding`)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None = None
    embedding: np.ndarray | None = None
    found_by: str = "detector"

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = (float(v) for v in self.box)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_dict(self, embedding: bool = True) -> dict:
        """The face as JSON: box, score, landmarks (null for box-only detectors), how it was found
        and, if asked and present, the embedding (6 decimals)."""
        data: dict = {
            "box": rounded(np.asarray(self.box).ravel()[:4]),
            "score": round(float(self.score), SCORE_DECIMALS),
            "landmarks": None if self.landmarks is None else rounded(self.landmarks),
            "found_by": self.found_by,
        }
        if embedding and self.embedding is not None:
            data["embedding"] = rounded(self.embedding, 6)
        return data


@runtime_checkable
class Detector(Protocol):
    """A face detector. Images are ``(H, W, 3)`` uint8 RGB arrays; faces come largest first."""

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]: ...


def sort_faces(faces: list[Face]) -> list[Face]:
    """Largest face first: the usual "the person in the photo" when a caller wants one."""
    return sorted(faces, key=lambda f: f.area, reverse=True)


def central_face_index(boxes: np.ndarray, image_shape: tuple[int, ...]) -> int:
    """Index of the face nearest the image centre among faces >= 1/4 of the largest one's area."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    centre = np.array([image_shape[1] / 2.0, image_shape[0] / 2.0])
    mid = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    dist = np.linalg.norm(mid - centre, axis=1)
    dist[area < area.max() / 4.0] = np.inf
    return int(np.argmin(dist))


def choose_face(
    faces: list[Face], image_shape: tuple[int, ...], choice: FaceChoice = "largest"
) -> Face | None:
    """The face that stands for the photo under ``choice`` (see :data:`FaceChoice`); None if no face."""
    if choice not in FACE_CHOICES:
        raise ParameterError("{face} is not a face choice; use largest or central", face=choice)
    if not faces:
        return None
    if choice == "largest":
        return max(faces, key=lambda f: f.area)
    return faces[central_face_index(np.stack([f.box for f in faces]), image_shape)]


def only_face(faces: list[Face], largest: bool, label: str) -> Face:
    """The one face of a photo that must show one person (enrolment, a verify probe): the rule every
    "one photo, one template" path shares. :class:`NoFaceError` if there is none; with several,
    :class:`SeveralFacesError` unless ``largest``, which takes the largest. ``label`` names the photo in
    the error."""
    if not faces:
        raise NoFaceError(f"{label}: no face found")
    if len(faces) > 1 and not largest:
        raise SeveralFacesError(label, len(faces))
    return max(faces, key=lambda f: f.area)
