"""Which backbone a classifier trains on: the face embedder for face photos, ImageNet features otherwise.

:func:`choose_backbone` settles ``Classifier.train(backbone=None)`` (``classify train`` without
``--backbone``, or ``--backbone auto``). It runs the face detector on a small, fixed sample of the data
set (:data:`PROBE_IMAGES` images, drawn with a seeded generator, each shrunk to at most
:data:`PROBE_SIDE` pixels) and counts the images that show **one dominant face**: a face whose shorter
side is at least :data:`DOMINANT_SIDE` of the image's shorter side, with no other face at least
:data:`RIVAL_AREA` of its area. When more than half of the readable sampled images do, the classes are
taken to be about faces and the face embedder :data:`FACE_BACKBONE` is chosen (each photo's largest
face, aligned and embedded); otherwise the whole image goes through :data:`IMAGE_BACKBONE`.

Measured (docs/heads.md): AT&T 24/24 sampled images, LFW 22/24 (dlib); the style set's 10 paintings and
5 photos 1/15 (mobilenet). The probe costs one detector pass over at most 24 small images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestyle.detect.faces import Face
from facestyle.errors import FacestyleError
from facestyle.io.progress import Progress, no_progress

#: ``backbone`` value (besides None) that asks for the automatic choice.
AUTO = "auto"
#: The face embedder chosen for folders of face photos (and the one ``fine_tune_epochs`` tunes).
FACE_BACKBONE = "dlib-resnet-v1"
#: The image backbone chosen for everything else.
IMAGE_BACKBONE = "mobilenet-v2-imagenet"
#: How many images of the data set the detector looks at.
PROBE_IMAGES = 24
#: Longest side, in pixels, of a probed image (a dominant face stays well above the detector's minimum).
PROBE_SIDE = 400
#: A dominant face's shorter side, as a share of the image's shorter side (a portrait, not a crowd).
DOMINANT_SIDE = 0.15
#: Another face of at least this share of the largest face's area means no face dominates.
RIVAL_AREA = 0.5


@dataclass(frozen=True)
class BackboneChoice:
    """The backbone a classifier trains on and why (``probe``: the detector's counts when automatic)."""

    name: str
    reason: str
    auto: bool
    probed: int = 0  #: readable sampled images
    one_face: int = 0  #: of those, images with one dominant face
    detector: str | None = None

    def to_dict(self) -> dict:
        """The choice as JSON (what ``classify train --json`` reports as ``backbone_probe``)."""
        return {
            "auto": self.auto,
            "probed": self.probed,
            "one_face": self.one_face,
            "detector": self.detector,
        }


def is_auto(backbone: str | None) -> bool:
    """Whether ``backbone`` asks for the automatic choice (None or ``"auto"``)."""
    return backbone is None or backbone == AUTO


def one_dominant_face(faces: Sequence[Face], image_shape: tuple[int, ...]) -> bool:
    """True when one face dominates the image: large enough (:data:`DOMINANT_SIDE`) and without a
    rival of comparable size (:data:`RIVAL_AREA`)."""
    if not faces:
        return False
    ordered = sorted(faces, key=lambda f: f.area, reverse=True)
    x1, y1, x2, y2 = (float(v) for v in ordered[0].box)
    if min(x2 - x1, y2 - y1) < DOMINANT_SIDE * min(image_shape[:2]):
        return False
    return len(ordered) == 1 or ordered[1].area < RIVAL_AREA * ordered[0].area


def probe_sample(paths: Sequence[str | Path], n: int = PROBE_IMAGES, seed: int = 0) -> list[Path]:
    """The files the probe looks at: ``n`` of ``paths`` drawn without replacement (all if fewer), in
    the data set's order; the same list for the same folder."""
    paths = [Path(p) for p in paths]
    if len(paths) <= n:
        return paths
    keep = np.sort(np.random.default_rng(seed).choice(len(paths), n, replace=False))
    return [paths[i] for i in keep]


def _shrink(image: np.ndarray, side: int = PROBE_SIDE) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def choose_backbone(
    paths: Sequence[str | Path],
    backbone: str | None = None,
    *,
    detector: str = "mtcnn",
    crop: str = "auto",
    fine_tune_epochs: int = 0,
    device: str | None = None,
    progress: Progress = no_progress,
) -> BackboneChoice:
    """The backbone for a data set of ``paths``: ``backbone`` itself when one is named; otherwise the
    face embedder when more than half of a sample of the images show one dominant face (found by
    ``detector`` under the face-finding policy ``crop``, so a data set of tight face crops counts as
    faces), else the ImageNet backbone. Fine-tuning exists only for the face embedder, so
    ``fine_tune_epochs`` > 0 chooses it without probing."""
    if not is_auto(backbone):
        return BackboneChoice(str(backbone), "named by the caller", auto=False)
    if fine_tune_epochs:
        return BackboneChoice(
            FACE_BACKBONE, f"fine-tuning trains the last stage of {FACE_BACKBONE}", auto=True
        )
    from facestyle.embed.features import face_finder
    from facestyle.io.images import load_image
    from facestyle.models.registry import detector as make_detector

    finder = face_finder(make_detector(detector, device), crop, device)  # type: ignore[arg-type]
    sample = probe_sample(paths)
    probed = one_face = 0
    for path in progress(sample, len(sample), "looking for faces"):
        try:
            image = _shrink(load_image(path))
        except FacestyleError:
            continue  # unreadable files are reported by the feature pass
        probed += 1
        one_face += one_dominant_face(finder.detect(image), image.shape)
    counts = f"{one_face} of {probed} sampled images show one dominant face ({finder.name})"
    if probed and one_face * 2 > probed:
        name, why = FACE_BACKBONE, f"{counts}: faces, so the face embedder on each photo's largest face"
    else:
        name, why = IMAGE_BACKBONE, f"{counts}: not a face data set, so ImageNet features of the whole image"
    return BackboneChoice(name, f"auto: {why}", True, probed, one_face, finder.detector.name)
