"""DlibResNet against dlib itself on real face chips, plus the dlib-specific layer behaviours."""

from __future__ import annotations

from pathlib import Path

import dlib  # noqa: E402  (dlib-bin, a dev dependency, is the parity reference: missing is a failure)
import numpy as np
import pytest
import torch

from facestyle.errors import ImageError
from facestyle.io.images import load_image
from facestyle.models.dlib_resnet import (
    DlibResNet,
    chips_to_tensor,
    load_dlib_resnet,
    zero_extended_add,
)
from facestyle.models.registry import path_of

LFW_PEOPLE = [
    "Aaron_Peirsol",
    "Abdullah_Gul",
    "Adam_Sandler",
    "Al_Gore",
    "Alejandro_Toledo",
    "Amelie_Mauresmo",
    "Angela_Bassett",
    "Arnold_Schwarzenegger",
    "Bill_Gates",
    "Colin_Powell",
]
ATT_SUBJECTS = ["s1", "s7", "s20", "s33"]


def _image_paths(shared_data: Path) -> list[Path]:
    lfw = shared_data / "faces" / "lfw-view1" / "images"
    paths = []
    for name in LFW_PEOPLE:
        found = sorted((lfw / name).glob("*.jpg"))
        if found:
            paths.append(found[0])
    paths += [shared_data / "faces" / "att" / s / "1.pgm" for s in ATT_SUBJECTS]
    return paths


@pytest.fixture(scope="module")
def chips(shared_data: Path) -> np.ndarray:
    """150x150 aligned chips made the way dlib's own pipeline makes them (HOG detector + 5 points)."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(path_of("dlib-shape-predictor-5")))
    out = []
    for path in _image_paths(shared_data):
        img = load_image(path)
        faces = detector(img, 1)  # LFW faces are ~60 px in these 150 px images: upsample once
        if not faces:
            continue
        face = max(faces, key=lambda r: r.area())
        out.append(dlib.get_face_chip(img, predictor(img, face), size=150, padding=0.25))
    assert len(out) >= 10, f"only {len(out)} faces found in the shared data"
    return np.stack(out)


@pytest.fixture(scope="module")
def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    model = dlib.face_recognition_model_v1(str(path_of("dlib-resnet-v1")))
    return np.array([np.asarray(model.compute_face_descriptor(chip)) for chip in chips], np.float64)


@pytest.fixture(scope="module")
def model() -> DlibResNet:
    return load_dlib_resnet(path_of("dlib-resnet-v1"))


def test_matches_dlib_descriptors_on_real_chips(model, chips, dlib_descriptors) -> None:
    with torch.inference_mode():
        ours = model(chips_to_tensor(chips)).double().numpy()
    assert ours.shape == (len(chips), 128)
    assert np.abs(ours - dlib_descriptors).max() <= 1e-4
    # Raw descriptors, not normalised: dlib's have norms spread around 1.5 rather than exactly 1.
    assert np.abs(np.linalg.norm(ours, axis=1) - 1).max() > 0.05


def test_single_chip_channels_first_matches_dlib(chips, dlib_descriptors) -> None:
    plain = load_dlib_resnet(path_of("dlib-resnet-v1"), channels_last=False)
    with torch.inference_mode():
        one = plain(chips_to_tensor(chips[0])).double().numpy()[0]
    np.testing.assert_allclose(one, dlib_descriptors[0], atol=1e-4, rtol=0)


def test_input_memory_layout_does_not_change_the_result(model, chips) -> None:
    x = chips_to_tensor(chips[:2])
    assert x.is_contiguous(memory_format=torch.channels_last)  # a free view of the NHWC chips
    with torch.inference_mode():
        a = model(x)
        b = model(x.contiguous())
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_same_person_closer_than_different_people(model, shared_data) -> None:
    """A sanity check of meaning, not just of numbers: dlib's 0.6 distance threshold separates these."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(path_of("dlib-shape-predictor-5")))
    att = shared_data / "faces" / "att"

    def chip(path: Path) -> np.ndarray:
        img = load_image(path)
        face = max(detector(img, 1), key=lambda r: r.area())
        return dlib.get_face_chip(img, predictor(img, face), size=150, padding=0.25)

    batch = np.stack([chip(att / "s5" / "1.pgm"), chip(att / "s5" / "2.pgm"), chip(att / "s12" / "1.pgm")])
    with torch.inference_mode():
        d = model(chips_to_tensor(batch)).numpy()
    same = np.linalg.norm(d[0] - d[1])
    different = np.linalg.norm(d[0] - d[2])
    assert same < 0.6 < different


def test_zero_extended_add_matches_dlib_add_prev() -> None:
    a = torch.arange(1 * 1 * 2 * 2, dtype=torch.float32).view(1, 1, 2, 2) + 1  # [[1,2],[3,4]]
    b = torch.full((1, 2, 3, 3), 10.0)
    out = zero_extended_add(a, b)
    expected = torch.full((1, 2, 3, 3), 10.0)
    expected[0, 0, :2, :2] += torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(out, expected)
    assert torch.equal(zero_extended_add(b, a), expected)  # symmetric, like dlib's tt::add


def test_feature_map_sizes_follow_dlib_unpadded_strides(model) -> None:
    """150 -> conv7/2 72 -> pool3/2 35 -> 35, 17, 8, then 4 (conv branch 3x3 zero-extended), 2."""
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:]))) for b in model.blocks]
    try:
        with torch.inference_mode():
            model(torch.full((1, 3, 150, 150), 128.0))
    finally:
        for h in hooks:
            h.remove()
    ends = [sizes[i] for i in (2, 6, 9, 12, 13)]  # last block of each level
    assert ends == [(32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2)]


def test_normalisation_uses_file_means(model) -> None:
    np.testing.assert_array_equal(model.mean_rgb.view(-1).numpy(), np.float32([122.782, 117.001, 104.298]))


@pytest.mark.parametrize("shape", [(1, 3, 112, 112), (1, 1, 150, 150), (3, 150, 150)])
def test_wrong_input_shape_is_a_clear_error(model, shape) -> None:
    with pytest.raises(ImageError, match="expects"):
        model(torch.zeros(shape))


def test_chips_to_tensor_layout_and_errors() -> None:
    chip = np.zeros((150, 150, 3), np.uint8)
    chip[0, 1] = (10, 20, 30)
    t = chips_to_tensor(chip)
    assert t.shape == (1, 3, 150, 150) and t.dtype == torch.float32
    assert t[0, :, 0, 1].tolist() == [10.0, 20.0, 30.0]
    with pytest.raises(ImageError, match="150x150"):
        chips_to_tensor(np.zeros((2, 112, 92, 3), np.uint8))
