"""Feature taps and weight loading. The ImageNet VGG19 file is not on test machines, so the real loading
code is exercised on a torchvision-layout state dict written here, with its digest injected."""

from __future__ import annotations

import hashlib

import pytest
import torch
import torchvision
from torch import nn

from facestyle.errors import ChecksumError, WeightsMissingError
from facestyle.style.backbones import (
    VGG19_LAYERS,
    FeatureExtractor,
    build_extractor,
    build_vgg19_features,
    vgg19_imagenet,
    vgg19_random,
)

TAPS = ["relu1_1", "relu2_1", "relu4_2"]


def test_layer_names_follow_torchvision_indices():
    tv = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])  # = vgg19().features
    assert len(VGG19_LAYERS) == len(tv) == 37
    assert all(isinstance(tv[i], nn.ReLU) for i, n in enumerate(VGG19_LAYERS) if n.startswith("relu"))
    assert VGG19_LAYERS[1] == "relu1_1" and VGG19_LAYERS[22] == "relu4_2" and VGG19_LAYERS[29] == "relu5_1"
    assert VGG19_LAYERS[36] == "pool5"


def test_network_is_truncated_at_the_deepest_tap():
    features = build_vgg19_features("relu4_2")
    assert len(features) == 23
    assert isinstance(features[21], nn.Conv2d) and features[21].out_channels == 512


def test_random_backbone_is_seeded_and_labelled_untrained():
    a, b = vgg19_random(TAPS, seed=0), vgg19_random(TAPS, seed=0)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fa, fb = a(x), b(x)
    assert set(fa) == set(TAPS)
    assert torch.equal(fa["relu4_2"], fb["relu4_2"])
    assert not torch.equal(fa["relu4_2"], vgg19_random(TAPS, seed=1)(x)["relu4_2"])
    assert a.trained is False and "untrained" in a.description.lower()
    assert fa["relu1_1"].shape == (1, 64, 32, 32) and fa["relu4_2"].shape == (1, 512, 4, 4)


@pytest.fixture(scope="module")
def state_file(tmp_path_factory):
    """A torchvision-layout VGG19 state dict (features.* keys) from torchvision's own layer builder."""
    torch.manual_seed(0)
    # torchvision's VGG19 ``features`` (building the whole model would also initialise 120M classifier
    # weights we do not need).
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"]).eval()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)  # must be ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg19-test.pth"
    torch.save(state, path)
    return features, path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_imagenet_loader_maps_torchvision_state_dict(state_file):
    features, path, digest = state_file
    ex = vgg19_imagenet(TAPS, weights_path=path, sha256=digest[:8])  # prefix, as torchvision publishes
    assert ex.trained and len(ex.body) == 23
    x = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = features[:23]((x - mean) / std)
        got = ex(x)["relu4_2"]
    assert torch.allclose(got, expected, atol=1e-5)


def test_imagenet_loader_refuses_a_wrong_digest(state_file):
    _, path, _ = state_file
    with pytest.raises(ChecksumError):
        vgg19_imagenet(TAPS, weights_path=path, sha256="dcbb9e9d")


def test_imagenet_loader_refuses_a_non_vgg_file(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError, match="shape|no tensor"):
        vgg19_imagenet(TAPS, weights_path=path, sha256=digest)


def test_missing_imagenet_weights_name_the_file_and_the_import_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsMissingError) as info:
        build_extractor("vgg19-imagenet", TAPS)
    msg = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in msg
    assert "facestyle models import vgg19-imagenet" in msg
    assert "\n" not in msg


class _Exploding(nn.Module):
    def forward(self, x):
        raise AssertionError("layers after the deepest tap must not run")


def test_generic_taps_stop_after_the_deepest_one():
    body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 2, 1), _Exploding())
    ex = FeatureExtractor(
        body, {"a": "1", "b": "2"}, mean=(0, 0, 0), std=(1, 1, 1), name="toy", trained=False, description=""
    )
    x = torch.rand(1, 3, 5, 5)
    feats = ex(x)
    assert torch.allclose(feats["b"], body[2](body[1](body[0](x))))
