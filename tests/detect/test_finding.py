"""The face-finding policy (issue 20) on real shared photos: tight crops that the detector misses are
found in ``auto`` with landmarks placed by O-Net, faceless images stay "no face", and every face says
how it was found.

The crops are made as ``benchmarks/tight_crops.py`` makes them: MTCNN's five landmarks on the uncropped
photo, the box they span widened by k, the photo cut to it. The landmark error is the mean distance to
the uncropped photo's landmarks over the inter-ocular distance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from facestyle.detect.finding import (
    CROP_MODES,
    WHOLE_MIN_SCORE,
    FaceFinder,
    check_crop,
    framed_box,
    onet_on_box,
    plausible_crop,
    whole_face,
)
from facestyle.errors import ParameterError
from facestyle.io.images import load_image
from facestyle.models.registry import detector as make_detector

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from tight_crops import landmark_error, side_light, tight_crop  # noqa: E402

#: Photos whose k = 1.2 crop MTCNN misses today (picked by running; 2026-11-29). The crops are 29 to
#: 47 pixels wide.
TIGHT = (
    "lfw-view1/images/Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
    "lfw-view1/images/Al_Gore/Al_Gore_0003.jpg",
    "lfw-view1/images/AJ_Cook/AJ_Cook_0001.jpg",
    "lfw-view1/images/Aaron_Peirsol/Aaron_Peirsol_0002.jpg",
    "att/s1/1.pgm",
    "att/s5/3.pgm",
    "att/s12/4.pgm",
    "att/s20/1.pgm",
    "att/s33/7.pgm",
    "att/s40/2.pgm",
)
#: Measured on these ten k = 1.2 crops in auto: mean landmark error 0.072 of the inter-ocular distance,
#: worst 0.150 (before the landmarks were refined on the detector's box: 0.087 and 0.142). On the
#: benchmark's 1,948 crops the mean is ~0.07 (docs/face-finding.md).
MEAN_ERROR_CEILING = 0.085
WORST_ERROR_CEILING = 0.18

#: Crops that O-Net's probability on the plain framing alone refuses (under 0.5, the former gate) and
#: the face score, which also asks the equalised copy and the mirror image, takes:
#: (photo, k, dark side or None), with the plain probability -> face score measured (2026-11-29).
REFUSED_BY_PLAIN = (
    ("lfw-view1/images/Emma_Watson/Emma_Watson_0002.jpg", 1.2, None),  # 0.25 -> 0.70
    ("lfw-view1/images/Stephan_Eberharter/Stephan_Eberharter_0001.jpg", 1.2, None),  # 0.24 -> 0.69
    ("att/s1/6.pgm", 1.4, "right"),  # 0.25 -> 0.77
    ("att/s17/2.pgm", 1.4, "right"),  # 0.14 -> 0.92
)

#: Faceless images of the shared style data. mosaic.jpg grew a small false face on a padded copy
#: before padded faces had to fill the frame; udnie.jpg has the highest whole-image face probability of
#: them (0.39, under the 0.5 gate).
FACELESS = (
    "content/tubingen.jpg",
    "content/golden_gate.jpg",
    "styles/mosaic.jpg",
    "styles/udnie.jpg",
    "styles/wave.jpg",
)
#: The highest face score of the shared faceless images is 0.21 (udnie.jpg); the gate is 0.4.
FACELESS_SCORE_CEILING = 0.3


@pytest.fixture(scope="module")
def mtcnn():
    return make_detector("mtcnn")


@pytest.fixture(scope="module")
def finders(mtcnn) -> dict[str, FaceFinder]:
    return {mode: FaceFinder(mtcnn, crop=mode) for mode in CROP_MODES}


@pytest.fixture(scope="module")
def tight_crops(shared_data: Path, finders) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, k = 1.2 crop, the uncropped photo's landmarks in crop coordinates) per photo of TIGHT."""
    out = []
    for rel in TIGHT:
        photo = load_image(shared_data / "faces" / rel)
        (face,) = finders["detect"].detect(photo)[:1]
        crop, corner = tight_crop(photo, face.landmarks, 1.2)
        out.append((rel, crop, face.landmarks - corner))
    return out


def test_tight_crops_missed_by_detect_are_found_in_auto(tight_crops, finders) -> None:
    errors = []
    for name, crop, truth in tight_crops:
        assert finders["detect"].detect(crop) == [], f"{name}: detect finds its crop now; pick another"
        faces = finders["auto"].detect(crop)
        assert len(faces) == 1, name
        assert faces[0].found_by in ("padded", "whole"), name
        errors.append(landmark_error(faces[0].landmarks, truth))
    print(f"\nk=1.2 crops in auto: landmark error mean {np.mean(errors):.3f}, worst {np.max(errors):.3f}")
    assert np.mean(errors) <= MEAN_ERROR_CEILING
    assert np.max(errors) <= WORST_ERROR_CEILING


def test_whole_places_landmarks_with_o_net_not_box_proportions(tight_crops, mtcnn) -> None:
    """``whole`` finds the landmarks: on a crop and on the same crop shifted inside a bigger frame they
    move with the face (fixed box proportions would move with the frame)."""
    name, crop, truth = tight_crops[0]
    face = whole_face(crop, mtcnn.onet)
    assert face.found_by == "whole" and face.score > 0.9
    assert landmark_error(face.landmarks, truth) <= WORST_ERROR_CEILING
    marks_from_box = np.array([0.265, 0.389]) * crop.shape[1::-1]  # where box proportions put the left eye
    assert np.linalg.norm(face.landmarks[0] - truth[0]) < np.linalg.norm(marks_from_box - truth[0])


def test_side_lit_crop_is_found(shared_data: Path, finders) -> None:
    """Half the face near black (the benchmark's hard variant) on a k = 1.4 crop: still found, with
    landmarks within twice the error measured here (0.064 with the refinement; 0.10 before it)."""
    photo = load_image(shared_data / "faces" / "att" / "s1" / "1.pgm")
    (face,) = finders["detect"].detect(photo)[:1]
    crop, corner = tight_crop(photo, face.landmarks, 1.4)
    truth = face.landmarks - corner
    dark = side_light(crop, truth, left=True)
    assert dark[:, :3].max() <= 12  # the dark (left) side is near black
    assert finders["detect"].detect(dark) == []
    faces = finders["auto"].detect(dark)
    assert len(faces) == 1 and faces[0].found_by in ("padded", "whole")
    assert landmark_error(faces[0].landmarks, truth) <= 0.13


@pytest.mark.parametrize("rel", FACELESS)
def test_faceless_images_are_no_face_in_auto(shared_data: Path, finders, mtcnn, rel: str) -> None:
    """No face, and the gate is not passed by a hair: the whole-image face score stays well under it."""
    image = load_image(shared_data / "style" / rel)
    assert finders["auto"].detect(image) == []
    assert finders["detect"].detect(image) == []
    assert whole_face(image, mtcnn.onet).score <= FACELESS_SCORE_CEILING < WHOLE_MIN_SCORE


@pytest.mark.parametrize(("rel", "k", "dark"), REFUSED_BY_PLAIN)
def test_crops_the_plain_framing_refused_are_found(shared_data: Path, finders, mtcnn, rel, k, dark) -> None:
    photo = load_image(shared_data / "faces" / rel)
    (face,) = finders["detect"].detect(photo)[:1]
    crop, corner = tight_crop(photo, face.landmarks, k)
    truth = face.landmarks - corner
    if dark is not None:
        crop = side_light(crop, truth, left=dark == "left")
    plain_score = onet_on_box(crop, framed_box(crop.shape), mtcnn.onet)[0]
    assert plain_score < 0.5, f"{rel}: O-Net alone takes this crop now; pick another"
    faces = finders["auto"].detect(crop)
    assert len(faces) == 1 and faces[0].found_by == "whole" and plausible_crop(faces[0], crop.shape)
    assert landmark_error(faces[0].landmarks, truth) <= WORST_ERROR_CEILING


def test_refined_landmarks_are_closer_than_one_framing(tight_crops, mtcnn) -> None:
    """``whole`` refines O-Net's landmarks on the detector's box around them: on the ten crops the mean
    error drops (measured 0.085 -> 0.072)."""
    once, refined = [], []
    for _, crop, truth in tight_crops:
        once.append(landmark_error(onet_on_box(crop, framed_box(crop.shape), mtcnn.onet)[1], truth))
        refined.append(landmark_error(whole_face(crop, mtcnn.onet).landmarks, truth))
    print(f"\none framing {np.mean(once):.3f}, refined {np.mean(refined):.3f}")
    assert np.mean(refined) < np.mean(once) - 0.005


def test_uncropped_photos_are_found_by_the_detector_as_before(lfw_dir: Path, finders) -> None:
    image = load_image(lfw_dir / "images" / "Christine_Todd_Whitman" / "Christine_Todd_Whitman_0005.jpg")
    before = finders["detect"].detect(image)
    after = finders["auto"].detect(image)
    assert len(after) == len(before) == 2
    for a, b in zip(after, before, strict=True):
        assert a.found_by == "detector"
        np.testing.assert_array_equal(a.box, b.box)
        np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_a_face_inside_the_frame_beside_a_bigger_cut_one_is_kept(lfw_dir: Path, finders) -> None:
    """The largest face the detector finds here is a neighbour cut by the frame (overhang 0.36), so
    ``auto`` looks again; the padded copy finds nothing and the whole image scores 0.45, over the gate.
    The face inside the frame (the photo's subject) must still win over ``whole``."""
    image = load_image(lfw_dir / "images" / "Pierce_Brosnan" / "Pierce_Brosnan_0012.jpg")
    before = finders["detect"].detect(image)
    after = finders["auto"].detect(image)
    assert [f.found_by for f in after] == ["detector"] * len(before) and len(before) == 2
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_found_by_is_in_the_json(tight_crops, finders) -> None:
    _, crop, _ = tight_crops[0]
    (face,) = finders["whole"].detect(crop)
    assert face.to_dict()["found_by"] == "whole"
    assert set(face.to_dict()) == {"box", "score", "landmarks", "found_by"}


def test_a_bad_mode_names_the_parameter(mtcnn) -> None:
    with pytest.raises(ParameterError, match=r"crop='tight' is not a mode; use detect, auto or whole"):
        check_crop("tight")
    with pytest.raises(ParameterError, match="crop='x'"):
        FaceFinder(mtcnn, crop="x")  # type: ignore[arg-type]
