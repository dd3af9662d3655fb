"""Aligned chips: a chip per face, the landmarks land on the template, files are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facestyle.align.similarity import apply_transform, similarity_transform
from facestyle.align.templates import DLIB_150
from facestyle.align.warp import align_face
from facestyle.api import save_face_chips
from facestyle.detect.faces import Face
from facestyle.io.images import load_image


def aligned_chips(image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
    return [align_face(image, f.landmarks, DLIB_150, 150) for f in faces]


def _synthetic_face() -> tuple[np.ndarray, Face]:
    """A 200x200 image with five coloured dots where the landmarks are."""
    image = np.zeros((200, 200, 3), np.uint8)
    landmarks = np.array([[70, 80], [130, 80], [100, 110], [75, 140], [125, 140]], np.float32)
    for x, y in landmarks.astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    return image, Face(np.array([40, 40, 160, 170], np.float32), 0.99, landmarks)


def test_chip_puts_landmarks_on_template() -> None:
    image, face = _synthetic_face()
    (chip,) = aligned_chips(image, [face])
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    # Where the dots went: the similarity transform that maps landmarks onto the template.
    matrix = similarity_transform(face.landmarks.astype(np.float64), DLIB_150.astype(np.float64))
    mapped = apply_transform(matrix, face.landmarks.astype(np.float64))
    for x, y in np.round(mapped).astype(int):
        if 0 <= x < 150 and 0 <= y < 150:
            assert chip[y, x].max() > 100, f"no dot near ({x}, {y})"
    # The chip is mostly dark (the image was): nothing else was pasted in.
    assert chip.mean() < 40


def test_save_face_chips_writes_one_file_per_face(tmp_path: Path) -> None:
    image, face = _synthetic_face()
    second = Face(face.box, 0.5, face.landmarks + 5)
    paths = save_face_chips(image, [face, second], tmp_path / "crops", stem="photo")
    assert [p.name for p in paths] == ["photo_0.png", "photo_1.png"]
    back = load_image(paths[0])
    np.testing.assert_array_equal(back, aligned_chips(image, [face])[0])


def test_box_only_faces_are_cropped_from_estimated_landmarks(tmp_path: Path, lfw_dir: Path) -> None:
    from facestyle.models.registry import detector

    image = load_image(lfw_dir / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg")
    faces = detector("haar").detect(image)
    assert faces and faces[0].landmarks is None
    paths = save_face_chips(image, faces[:1], tmp_path, stem="aaron")
    chip = load_image(paths[0])
    assert chip.shape == (150, 150, 3)
    assert chip.std() > 20  # a real face, not an empty warp
