"""Aligned chips: a chip per face, the landmarks land on the template, files are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


#: One colour per landmark, so a mirrored or rotated chip cannot pass for a right one.
DOT_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255))


def test_chip_puts_the_landmarks_on_the_template_points() -> None:
    """The photo is made so the answer is known without the code's own transform: the five dots sit
    at the template's points scaled by 2 and shifted by (30, 40). The chip must undo exactly that, so
    each dot lands on its template point, in its own colour."""
    scale, shift = 2.0, np.array([30.0, 40.0])
    marks = DLIB_150 * scale + shift
    image = np.zeros((400, 400, 3), np.uint8)
    for (x, y), color in zip(np.round(marks).astype(int), DOT_COLORS, strict=True):
        image[y - 3 : y + 4, x - 3 : x + 4] = color
    (chip,) = aligned_chips(image, [Face(np.array([0, 0, 400, 400], np.float32), 1.0, marks)])
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    for (x, y), color in zip(np.round(DLIB_150).astype(int), DOT_COLORS, strict=True):
        np.testing.assert_array_equal(chip[y, x], color)  # a 7 px dot halves to 3.5 px: its centre is exact
    assert chip.mean() < 10  # and nothing else was pasted in: the photo is black elsewhere


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
