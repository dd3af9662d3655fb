"""The one-face rule shared by enrolment, verify probes and bulk enrollment."""

from __future__ import annotations

import numpy as np
import pytest

from facestyle.detect.faces import Face, only_face
from facestyle.errors import NoFaceError, SeveralFacesError


def _face(x1: float, y1: float, x2: float, y2: float) -> Face:
    return Face(np.array([x1, y1, x2, y2], np.float32), 0.99)


def test_no_face_names_the_photo() -> None:
    with pytest.raises(NoFaceError, match="alice.jpg: no face found"):
        only_face([], largest=True, label="alice.jpg")


def test_several_faces_refused_unless_largest() -> None:
    small, big = _face(0, 0, 10, 10), _face(20, 20, 60, 60)
    with pytest.raises(SeveralFacesError, match="2 faces found"):
        only_face([small, big], largest=False, label="group.jpg")
    # the largest by area, whatever order the detector listed them in
    assert only_face([small, big], largest=True, label="group.jpg") is big
    assert only_face([big], largest=False, label="one.jpg") is big
