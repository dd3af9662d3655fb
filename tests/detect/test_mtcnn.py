"""MTCNN on real photos: finds the face where a person sees it; faceless images are not an error."""

from __future__ import annotations

import numpy as np
import pytest

from facestyle.io.images import load_image
from facestyle.models.registry import detector as make_detector


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def mtcnn():
    return make_detector("mtcnn")


# Boxes checked by eye on the images (x1, y1, x2, y2): forehead to chin, ear to ear.
EYEBALLED = {
    ("lfw", "AJ_Cook/AJ_Cook_0001.jpg"): (52, 38, 106, 112),
    ("lfw", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"): (50, 42, 101, 112),
    ("att", "s1/1.pgm"): (18, 28, 75, 102),
}


@pytest.mark.parametrize("source,rel", list(EYEBALLED))
def test_finds_the_face(mtcnn, lfw_dir, att_dir, source, rel):
    root = lfw_dir / "images" if source == "lfw" else att_dir
    faces = mtcnn.detect(load_image(root / rel))
    assert faces, "no face found"
    best = faces[0]
    assert _iou(best.box, EYEBALLED[(source, rel)]) >= 0.5
    assert best.score > 0.95
    lm = best.landmarks
    assert lm.shape == (5, 2)
    # eyes above nose above mouth, left eye left of right eye, all inside the box
    assert lm[0, 0] < lm[1, 0] and max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
    assert (lm[:, 0] > best.box[0]).all() and (lm[:, 0] < best.box[2]).all()


def test_faceless_images_in_a_batch_do_not_crash(mtcnn, lfw_dir):
    rng = np.random.default_rng(1)
    blank = np.full((120, 160, 3), 200, dtype=np.uint8)
    noise = rng.integers(0, 256, size=(90, 90, 3), dtype=np.uint8)
    tiny = np.zeros((8, 8, 3), dtype=np.uint8)
    face = load_image(lfw_dir / "images" / "AJ_Cook" / "AJ_Cook_0001.jpg")
    results = mtcnn.detect_batch([blank, noise, tiny, face])
    assert results[0] == [] and results[2] == []
    assert len(results[3]) == 1


def test_unknown_detector_is_a_usage_error():
    from facestyle.errors import UsageError

    with pytest.raises(UsageError, match="unknown model 'yolo9000'"):
        make_detector("yolo9000")
    with pytest.raises(UsageError, match="not a detector"):
        make_detector("dlib-resnet-v1")


def test_large_photo_is_searched_downscaled_and_mapped_back(mtcnn, lfw_dir):
    import cv2

    small = load_image(lfw_dir / "images" / "AJ_Cook" / "AJ_Cook_0001.jpg")
    big = cv2.resize(small, (3000, 3000), interpolation=cv2.INTER_CUBIC)  # 9 MP, above max_side
    face_small, face_big = mtcnn.detect(small)[0], mtcnn.detect(big)[0]
    np.testing.assert_allclose(face_big.box / 20.0, face_small.box, atol=3.0)
    np.testing.assert_allclose(face_big.landmarks / 20.0, face_small.landmarks, atol=3.0)
