"""The feature service: one row per file (or array), the chosen face, failures as NaN rows that say
why, and a cache that serves what it computed and nothing stale."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from facestyle.api import FacePipeline
from facestyle.embed.features import FaceFeatures, ImageFeatures, cache_root
from facestyle.io.images import load_image

TWO_FACES = "Christine_Todd_Whitman/Christine_Todd_Whitman_0005.jpg"  # two people side by side


@pytest.fixture(scope="module")
def pipe() -> FacePipeline:
    return FacePipeline()


@pytest.fixture
def photos(lfw_dir: Path, tmp_path: Path) -> list[Path]:
    """Copies (so a test may edit them) of three LFW photos, one with two faces."""
    names = ["AJ_Cook/AJ_Cook_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg", TWO_FACES]
    out = []
    for rel in names:
        dst = tmp_path / Path(rel).name
        shutil.copy(lfw_dir / "images" / rel, dst)
        out.append(dst)
    return out


def test_rows_are_the_chosen_faces_embeddings(pipe: FacePipeline, photos: list[Path]) -> None:
    table = pipe.features(face="largest").embed(photos)
    assert table.status == ["ok", "ok", "ok"] and table.values.shape == (3, 128)
    for i, path in enumerate(photos):
        faces = pipe.faces(path)
        want = max(faces, key=lambda f: f.area)
        np.testing.assert_allclose(table.values[i], want.embedding, atol=1e-6)
        np.testing.assert_allclose(table.boxes[i], want.box, atol=1e-3)


def test_face_choice_picks_a_different_person_in_a_two_person_photo(pipe: FacePipeline, photos) -> None:
    path = photos[2]
    faces = pipe.faces(path)
    assert len(faces) == 2
    largest = pipe.features(face="largest", cache=False).embed([path]).values[0]
    central = pipe.features(face="central", cache=False).embed([path]).values[0]
    image = load_image(path)
    centres = [abs((f.box[0] + f.box[2]) / 2 - image.shape[1] / 2) for f in faces]
    nearest = faces[int(np.argmin(centres))]
    np.testing.assert_allclose(central, nearest.embedding, atol=1e-6)
    np.testing.assert_allclose(largest, max(faces, key=lambda f: f.area).embedding, atol=1e-6)
    assert not np.allclose(largest, central)  # the two rules really differ on this photo


def test_failures_are_nan_rows_that_say_why(pipe: FacePipeline, photos, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (120, 120), (128, 128, 128)).save(blank)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    items = [photos[0], blank, broken, tmp_path / "missing.jpg"]
    table = pipe.features().embed(items)
    assert table.status == ["ok", "no_face", "error", "error"]
    assert table.ok.tolist() == [True, False, False, False]
    assert np.isfinite(table.values[0]).all() and np.isnan(table.values[1:]).all()
    assert table.errors[0] is None and table.errors[1] is None
    assert "not an image" in table.errors[2] and "no such file" in table.errors[3]
    assert table.reason(1) == "no_face"


def test_cache_serves_what_it_computed_and_recomputes_an_edited_file(pipe: FacePipeline, photos) -> None:
    first = pipe.features().embed(photos)
    assert first.computed == 3
    again = pipe.features().embed(photos)  # a new service: only the disk cache is shared
    assert again.computed == 0
    assert {f.stat().st_mode & 0o777 for f in cache_root().glob("*.npz")} == {0o600}  # biometric data
    np.testing.assert_array_equal(again.values, first.values)
    # Replace one photo's content by another photo's: its row must follow the new content.
    shutil.copy(photos[1], photos[0])
    os.utime(photos[0], ns=(1, 1))  # a different mtime, as any edit gives
    edited = pipe.features().embed(photos)
    assert edited.computed == 1
    np.testing.assert_allclose(edited.values[0], first.values[1], atol=1e-6)


def test_the_cache_key_includes_the_face_choice_and_a_corrupt_cache_is_recomputed(pipe, photos) -> None:
    pipe.features(face="largest").embed(photos)
    assert pipe.features(face="central").embed(photos).computed == 3  # not served the other rule's rows
    for f in cache_root().glob("*.npz"):
        f.write_bytes(b"garbage")
    table = pipe.features(face="largest").embed(photos)
    assert table.computed == 3 and table.ok.all()


def test_arrays_are_accepted_and_never_cached(pipe: FacePipeline, photos) -> None:
    arrays = [load_image(p) for p in photos]
    by_path = pipe.features().embed(photos)
    by_array = pipe.features().embed(arrays)
    assert by_array.computed == 3 and by_array.paths == ["<array 0>", "<array 1>", "<array 2>"]
    np.testing.assert_allclose(by_array.values, by_path.values, atol=1e-6)
    assert pipe.features().embed(arrays).computed == 3


def test_cache_off_writes_nothing(pipe: FacePipeline, photos) -> None:
    pipe.features(cache=False).embed(photos)
    assert not cache_root().exists() or not list(cache_root().glob("*.npz"))


def test_training_views_are_reproduced_from_the_cache_and_without_it(pipe: FacePipeline, photos) -> None:
    features: FaceFeatures = pipe.features(face="central")

    def views(chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = np.clip(chip.astype(np.int16) + rng.integers(-20, 21, chip.shape), 0, 255).astype(np.uint8)
        return np.stack([chip, noisy])

    a = features.views(photos[:2], views, n_views=2, variant="noise20", seed=3)
    assert a.values.shape == (2, 2, 128) and a.computed == 2
    cached = pipe.features(face="central").views(photos[:2], views, n_views=2, variant="noise20", seed=3)
    assert cached.computed == 0
    np.testing.assert_array_equal(cached.values, a.values)
    fresh = pipe.features(face="central", cache=False).views(
        photos[:2], views, n_views=2, variant="noise20", seed=3
    )
    assert fresh.computed == 2
    np.testing.assert_allclose(fresh.values, a.values, atol=1e-6)
    # View 0 is the chip itself: the plain embedding; the other views follow the seed.
    np.testing.assert_allclose(a.values[:, 0], features.embed(photos[:2]).values, atol=1e-6)
    other_seed = features.views(photos[:2], views, n_views=2, variant="noise20", seed=4)
    assert other_seed.computed == 2 and not np.allclose(other_seed.values[:, 1], a.values[:, 1])
    # Another list (here: another order) is another table, drawn afresh.
    assert features.views(photos[1::-1], views, n_views=2, variant="noise20", seed=3).computed == 2


def test_image_features_pool_a_tap_and_are_cached(photos) -> None:
    source = ImageFeatures("vgg19-random", tap="relu2_1", size=64)
    table = source.embed(photos[:2])
    assert table.values.shape == (2, 256) and table.ok.all()  # mean and max of 128 channels
    # The same numbers from the registry's backbone, pooled by hand.
    import cv2
    import torch

    from facestyle.models.registry import backbone

    small = cv2.resize(load_image(photos[0]), (64, 64), interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        act = backbone("vgg19-random", ["relu2_1"])(torch.from_numpy(small[None]).permute(0, 3, 1, 2) / 255.0)
    want = torch.cat([act["relu2_1"].mean(dim=(2, 3)), act["relu2_1"].amax(dim=(2, 3))], dim=1)[0].numpy()
    np.testing.assert_allclose(table.values[0], want, rtol=1e-5, atol=1e-6)
    assert ImageFeatures("vgg19-random", tap="relu2_1", size=64).embed(photos[:2]).computed == 0
