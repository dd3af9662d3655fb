"""Our MTCNN cascade (package NMS at every stage) against facenet-pytorch's own MTCNN on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facestyle.detect.boxes import iou_matrix
from facestyle.detect.mtcnn_stages import pyramid_scales, regress, run_cascade, squared
from facestyle.io.images import load_image

IMAGES = [
    "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "Al_Gore/Al_Gore_0003.jpg",
    "Christine_Todd_Whitman/Christine_Todd_Whitman_0005.jpg",
    "Habib_Rizieq/Habib_Rizieq_0001.jpg",
    "Hans_Blix/Hans_Blix_0003.jpg",
]


def test_pyramid_and_box_helpers_hand_computed() -> None:
    # 100 px short side, 20 px faces: first scale 0.6 (-> 60 px), then x0.5 while >= 12 px:
    # 60, 30, 15 -> three scales.
    np.testing.assert_allclose(pyramid_scales(100, 200, 20, 0.5), [0.6, 0.3, 0.15])
    box = np.array([[10.0, 20.0, 29.0, 59.0]])
    # Inclusive size: 20 x 40. Offsets (0.1, -0.1, 0, 0.5) move x1 by +2, y1 by -4, y2 by +20.
    np.testing.assert_allclose(regress(box, np.array([[0.1, -0.1, 0.0, 0.5]]), True), [[12, 16, 29, 79]])
    # Exclusive size (P-Net stage): 19 x 39.
    np.testing.assert_allclose(regress(box, np.array([[1.0, 0, 0, 0]]), False), [[29, 20, 29, 59]])
    np.testing.assert_allclose(squared(np.array([[0.0, 0.0, 10.0, 4.0, 0.9]])), [[0, -3, 10, 7, 0.9]])


@pytest.fixture(scope="module")
def nets():
    """Our own P/R/O-Net modules with the registry's verified weights (what the product runs)."""
    from facestyle.models.builders import mtcnn_nets
    from facestyle.models.registry import MTCNN

    return mtcnn_nets(MTCNN, "cpu")


@pytest.fixture(scope="module")
def reference():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


@pytest.mark.parametrize("relpath", IMAGES)
def test_matches_facenet_pytorch_mtcnn(nets, reference, lfw_dir: Path, relpath: str) -> None:
    image = load_image(lfw_dir / "images" / relpath)
    boxes, points = run_cascade(image, *nets)
    ref_boxes, ref_probs, ref_points = reference.detect(image, landmarks=True)
    assert ref_boxes is not None and len(boxes) == len(ref_boxes)
    ref_boxes = np.asarray(ref_boxes, np.float64)
    ref_probs = np.asarray(ref_probs, np.float64)
    ref_points = np.asarray(ref_points, np.float64)
    ious = iou_matrix(boxes[:, :4], ref_boxes)
    match = ious.argmax(axis=1)
    assert (ious.max(axis=1) >= 0.95).all(), ious.max(axis=1)
    assert len(set(match.tolist())) == len(match)  # one-to-one
    np.testing.assert_allclose(boxes[:, 4], ref_probs[match], atol=1e-4)
    # Landmark error relative to the box size.
    side = ref_boxes[match, 2] - ref_boxes[match, 0]
    err = np.linalg.norm(points - ref_points[match], axis=2).max(axis=1) / side
    assert (err < 0.02).all(), err


def test_haar_with_onet_refiner_gives_mtcnn_like_landmarks(lfw_dir: Path) -> None:
    from facestyle.models.registry import detector

    det = detector("haar", landmarks=True)
    mtcnn = detector("mtcnn")
    errors = []
    for relpath in IMAGES[:3]:
        image = load_image(lfw_dir / "images" / relpath)
        refined, ref = det.detect(image), mtcnn.detect(image)
        assert refined and all(f.landmarks is not None and f.landmarks.shape == (5, 2) for f in refined)
        for face in refined:
            k = int(iou_matrix(face.box, np.stack([r.box for r in ref]))[0].argmax())
            assert iou_matrix(face.box, ref[k].box)[0, 0] >= 0.7
            side = ref[k].box[2] - ref[k].box[0]
            errors.append(np.linalg.norm(face.landmarks - ref[k].landmarks, axis=1).max() / side)
    # Worst landmark per face, relative to face width; 60-image check: median 2.3%, max 7.9%.
    assert np.median(errors) < 0.05 and max(errors) < 0.12, errors
