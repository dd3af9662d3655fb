"""Fixtures shared by the gallery tests: one face pipeline (MTCNN + dlib ResNet) per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def face_pipeline():
    from facestyle.api import FacePipeline

    return FacePipeline()
