"""The face-finding policy through the API and the feature service (issue 20): FacePipeline(crop=...),
FaceFeatures(crop=...), found_by in results and tables, the crop mode in the cache key, and the old
``no_face="whole"`` as an alias that no longer places landmarks by box proportions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facestyle.api import FacePipeline
from facestyle.embed.features import FaceFeatures
from facestyle.errors import ParameterError
from facestyle.io.images import load_image

PHOTO = "att/s1/1.pgm"


@pytest.fixture(scope="module")
def pipe() -> FacePipeline:
    return FacePipeline()


@pytest.fixture(scope="module")
def crop(shared_data: Path, pipe: FacePipeline) -> np.ndarray:
    """The k = 1.2 tight crop of AT&T s1/1 (MTCNN finds no face in it)."""
    photo = load_image(shared_data / "faces" / PHOTO)
    marks = pipe.detect(photo)[0].landmarks
    lo, hi = marks.min(axis=0), marks.max(axis=0)
    c, s = (lo + hi) / 2, (hi - lo) * 1.2
    x1, y1 = np.round(c - s / 2).astype(int)
    x2, y2 = np.round(c + s / 2).astype(int)
    return np.ascontiguousarray(photo[y1:y2, x1:x2])


def test_pipeline_crop_modes(pipe: FacePipeline, crop: np.ndarray) -> None:
    assert FacePipeline(crop="detect").faces(crop) == []
    faces = pipe.faces(crop)  # auto, the default
    assert len(faces) == 1 and faces[0].found_by == "whole"
    assert faces[0].embedding.shape == (128,)
    assert pipe.faces(crop)[0].to_dict(embedding=False)["found_by"] == "whole"


def test_the_crop_is_identified_as_its_person(
    shared_data: Path, pipe: FacePipeline, crop: np.ndarray
) -> None:
    """One-shot identify among six AT&T people enrolled from uncropped photo 2: the crop of s1/1 found
    in auto is nearest to s1 (measured: 0.908 to s1, at most 0.882 to the other five)."""
    att = shared_data / "faces" / "att"
    enrolled = np.stack([pipe.face(att / f"s{s}" / "2.pgm").embedding for s in range(1, 7)])
    scores = enrolled @ pipe.face(crop).embedding
    assert int(np.argmax(scores)) == 0, scores


def test_features_report_found_by_and_key_the_cache_by_mode(
    shared_data: Path, pipe: FacePipeline, crop: np.ndarray
) -> None:
    style = shared_data / "style" / "content" / "tubingen.jpg"
    items = [crop, shared_data / "faces" / PHOTO, style]
    auto = pipe.features(cache=False)
    table = auto.embed(items)
    assert table.status == ["ok", "ok", "no_face"]
    assert table.found_by == ["whole", "detector", None]
    detect = pipe.features(crop="detect", cache=False)
    assert detect.embed(items).status == ["no_face", "ok", "no_face"]
    assert "crop=auto" in auto.key and "crop=detect" in detect.key and auto.key != detect.key


def test_features_cache_keeps_found_by(tmp_path: Path, pipe: FacePipeline, crop: np.ndarray) -> None:
    from facestyle.io.images import save_image

    path = save_image(tmp_path / "crop.png", crop)
    first = pipe.features().embed([path])
    again = pipe.features().embed([path])
    assert first.computed == 1 and again.computed == 0
    assert again.found_by == ["whole"]
    np.testing.assert_array_equal(first.values, again.values)


def test_no_face_whole_is_an_alias_of_auto(pipe: FacePipeline, crop: np.ndarray) -> None:
    old = FaceFeatures(pipe.embedder, pipe.detector, no_face="whole", cache=False)
    new = FaceFeatures(pipe.embedder, pipe.detector, crop="auto", cache=False)
    np.testing.assert_array_equal(old.embed([crop]).values, new.embed([crop]).values)
    with pytest.raises(ParameterError, match="no_face='whole' means crop='auto'"):
        FaceFeatures(pipe.embedder, pipe.detector, crop="detect", no_face="whole")


def test_bad_crop_is_refused_before_models_load() -> None:
    with pytest.raises(ParameterError, match=r"^crop='tight' is not a mode; use detect, auto or whole$"):
        FacePipeline(crop="tight")  # type: ignore[arg-type]
