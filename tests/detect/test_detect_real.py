"""Every detector finds the faces of real photos, scored against boxes checked by eye.

The reference boxes were read off 3x enlargements of the LFW images with a 10 px grid drawn over them
(hairline/forehead to chin, cheek to cheek), not taken from any detector's output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facestyle.detect.boxes import iou_matrix
from facestyle.io.images import load_image
from facestyle.models.registry import detector as make_detector

#: image (relative to lfw-view1/images) -> faces checked by eye, x1 y1 x2 y2 in the 150x150 image.
EYE_BOXES = {
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg": [[48, 40, 102, 112]],
    "Al_Gore/Al_Gore_0003.jpg": [[44, 38, 108, 116]],
    "Christine_Todd_Whitman/Christine_Todd_Whitman_0005.jpg": [[43, 43, 97, 115], [93, 47, 148, 117]],
}


@pytest.fixture(scope="module")
def detectors() -> dict:
    return {name: make_detector(name) for name in ("mtcnn", "haar")}


def _best_ious(found, expected) -> np.ndarray:
    if not found:
        return np.zeros(len(expected))
    return iou_matrix(np.asarray(expected, float), np.stack([f.box for f in found])).max(axis=1)


@pytest.mark.parametrize("name", ["mtcnn", "haar"])
@pytest.mark.parametrize("relpath", sorted(EYE_BOXES))
def test_finds_eye_checked_faces(detectors: dict, lfw_dir: Path, name: str, relpath: str) -> None:
    image = load_image(lfw_dir / "images" / relpath)
    faces = detectors[name].detect(image)
    ious = _best_ious(faces, EYE_BOXES[relpath])
    assert (ious >= 0.5).all(), f"{name} on {relpath}: best IoUs {ious.round(2)}"
    for face in faces:
        assert 0.0 <= face.score <= 1.0
        assert face.box.shape == (4,)
        if name == "mtcnn":
            assert face.landmarks is not None and face.landmarks.shape == (5, 2)
        else:
            assert face.landmarks is None


@pytest.mark.parametrize("name", ["mtcnn", "haar"])
def test_finds_face_in_enlarged_photo(detectors: dict, lfw_dir: Path, name: str) -> None:
    """The same face at 4x (600 px): boxes scale with the image."""
    import cv2

    image = load_image(lfw_dir / "images" / "Aaron_Peirsol/Aaron_Peirsol_0001.jpg")
    big = cv2.resize(image, (600, 600), interpolation=cv2.INTER_CUBIC)
    ious = _best_ious(
        detectors[name].detect(big), np.asarray(EYE_BOXES["Aaron_Peirsol/Aaron_Peirsol_0001.jpg"]) * 4
    )
    assert ious[0] >= 0.5


@pytest.mark.parametrize("name", ["mtcnn", "haar"])
def test_no_face_in_architecture_photo(detectors: dict, shared_data: Path, name: str) -> None:
    import cv2

    image = load_image(shared_data / "style" / "content" / "amber.jpg")  # a church door, no people
    image = cv2.resize(image, (400, 400), interpolation=cv2.INTER_AREA)
    assert detectors[name].detect(image) == []


def test_detect_batch_matches_detect(detectors: dict, lfw_dir: Path) -> None:
    images = [load_image(lfw_dir / "images" / p) for p in sorted(EYE_BOXES)]
    batch = detectors["haar"].detect_batch(images)
    single = [detectors["haar"].detect(im) for im in images]
    assert [len(b) for b in batch] == [len(s) for s in single]
    for b, s in zip(batch, single, strict=True):
        for fb, fs in zip(b, s, strict=True):
            np.testing.assert_allclose(fb.box, fs.box)


def test_haar_refine_hook_receives_faces(lfw_dir: Path) -> None:
    from facestyle.detect.faces import Face
    from facestyle.detect.haar import HaarDetector
    from facestyle.models.registry import HAAR
    from facestyle.models.weights import weight_path

    seen = []

    def refine(image: np.ndarray, faces: list[Face]) -> list[Face]:
        seen.append(len(faces))
        return [Face(f.box, f.score, np.zeros((5, 2), np.float32)) for f in faces]

    image = load_image(lfw_dir / "images" / "Al_Gore/Al_Gore_0003.jpg")
    faces = HaarDetector(weight_path(HAAR), refine=refine).detect(image)
    assert seen == [len(faces)] and faces and all(f.landmarks is not None for f in faces)


def test_haar_rejects_bad_arrays() -> None:
    from facestyle.errors import ImageError

    haar = make_detector("haar")
    with pytest.raises(ImageError):
        haar.detect(np.zeros((50, 50, 4), np.uint8))
    with pytest.raises(ImageError):
        haar.detect(np.zeros((50, 50, 3), np.float32))
    assert haar.detect(np.zeros((10, 10, 3), np.uint8)) == []
