"""dlib's face ResNet as a style backbone (the registry's ``dlib-resnet-v1``): its taps must be the one
dlib trunk's block outputs, ``DlibResNet.features``, and through them the face network itself."""

from __future__ import annotations

import pytest
import torch

from facestyle.models import registry
from facestyle.models.dlib_resnet import DlibResNet

SPEC = registry.get_model("dlib-resnet-v1")
BLOCKS = range(len(SPEC.taps))


@pytest.fixture(scope="module")
def extractor():
    return registry.backbone("dlib-resnet-v1", list(SPEC.taps), "cpu")


@pytest.fixture(scope="module")
def chip_features(extractor):
    """A random 150x150 image in [0, 1] and every tap of it (stylize's input range)."""
    x = torch.rand(1, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, extractor(x)


def test_the_backbone_is_the_registry_entry(extractor):
    assert isinstance(extractor.body, DlibResNet)
    assert extractor.name == "dlib-resnet-v1" and extractor.trained
    assert SPEC.taps == tuple(f"block{k}" for k in BLOCKS) and len(SPEC.style_taps) == 4


def test_each_tap_is_exactly_the_trunk_output_of_its_block(extractor, chip_features):
    x, feats = chip_features
    with torch.no_grad():
        exact = [torch.equal(feats[f"block{k}"], extractor.body.features(x * 255, upto=k)) for k in BLOCKS]
    assert all(exact), f"blocks differing: {[k for k in BLOCKS if not exact[k]]}"


def test_the_last_tap_pooled_through_fc_is_the_face_descriptor(extractor, chip_features):
    x, feats = chip_features
    net = extractor.body
    with torch.no_grad():
        via_taps = net.fc(feats["block13"].mean(dim=(2, 3)))
        direct = net(x * 255.0)
    # 4e-7 relative when measured; a wrong block or input scale is off by far more.
    assert float((via_taps - direct).abs().max() / direct.abs().max()) < 1e-5


def test_the_style_taps_work_on_any_image_size(extractor):
    taps = list(SPEC.style_taps) + list(SPEC.content_taps)
    ex = registry.backbone("dlib-resnet-v1", taps, "cpu")
    with torch.no_grad():
        feats = ex(torch.rand(1, 3, 96, 128))
    assert set(feats) == set(taps)
    channels = [feats[t].shape[1] for t in SPEC.style_taps]
    assert channels == sorted(channels) and channels[0] == 32  # deeper taps, more channels
