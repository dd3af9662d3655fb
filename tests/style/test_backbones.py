"""The VGG19 style backbones of the registry: layer names, taps, seeded random weights, and the real
weight-loading path. The ImageNet VGG19 file is not on test machines, so a torchvision-layout state
dict is written here and imported under a copy of the registry entry that carries its digest."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil

import pytest
import torch
import torchvision
from torch import nn

from facestyle.errors import ChecksumError, WeightsMissingError
from facestyle.models import registry
from facestyle.models.extractor import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor
from facestyle.models.specs import ModelSpec
from facestyle.models.vgg import VGG19_LAYERS, VGG19_TAPS, build_vgg19_features
from facestyle.models.weights import import_weights, models_dir

TAPS = ["relu1_1", "relu2_1", "relu4_2"]


@pytest.fixture(autouse=True)
def _no_torch_hub(tmp_path, monkeypatch):
    """torch's hub cache is a place weights are looked for: keep a real download out of these tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def test_layer_names_follow_torchvision_indices():
    tv = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])  # = vgg19().features
    assert len(VGG19_LAYERS) == len(tv) == 37
    assert all(isinstance(tv[i], nn.ReLU) for i, n in enumerate(VGG19_LAYERS) if n.startswith("relu"))
    assert VGG19_LAYERS[1] == "relu1_1" and VGG19_LAYERS[22] == "relu4_2" and VGG19_LAYERS[29] == "relu5_1"
    assert VGG19_LAYERS[36] == "pool5"


@pytest.mark.parametrize("name", ["vgg19-imagenet", "vgg19-random"])
def test_registry_writes_out_the_network_taps(name):
    """The registry spells the tap names out (it stays torch-free); they must be the network's."""
    spec = registry.get_model(name)
    assert spec.taps == VGG19_TAPS
    assert set(spec.style_taps) | set(spec.content_taps) <= set(VGG19_TAPS)


def test_network_is_truncated_at_the_deepest_tap():
    features = build_vgg19_features("relu4_2")
    assert len(features) == 23
    assert isinstance(features[21], nn.Conv2d) and features[21].out_channels == 512


def test_random_backbone_is_seeded_and_labelled_untrained():
    a, b = (registry.backbone("vgg19-random", TAPS, "cpu", seed=0) for _ in range(2))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fa, fb = a(x), b(x)
    assert set(fa) == set(TAPS)
    assert torch.equal(fa["relu4_2"], fb["relu4_2"])
    assert not torch.equal(fa["relu4_2"], registry.backbone("vgg19-random", TAPS, seed=1)(x)["relu4_2"])
    assert a.trained is False and "untrained" in a.description.lower() and a.name == "vgg19-random"
    assert fa["relu1_1"].shape == (1, 64, 32, 32) and fa["relu4_2"].shape == (1, 512, 4, 4)


@pytest.fixture(scope="module")
def state_file(tmp_path_factory):
    """A torchvision-layout VGG19 state dict (``features.*`` keys) from torchvision's own layer builder,
    and that builder's network with those weights."""
    torch.manual_seed(0)
    # torchvision's VGG19 ``features`` (building the whole model would also initialise 120M classifier
    # weights we do not need).
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"]).eval()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)  # must be ignored
    path = tmp_path_factory.mktemp("vgg") / "vgg19-test.pth"
    torch.save(state, path)
    return features, path


def _entry_for(path, monkeypatch) -> ModelSpec:
    """The registry's vgg19-imagenet entry, its file's digest that of ``path``, in the registry."""
    real = registry.get_model("vgg19-imagenet")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = dataclasses.replace(real, files=(dataclasses.replace(real.files[0], sha256=digest),))
    monkeypatch.setitem(registry.MODELS, spec.name, spec)
    return spec


def test_imagenet_weights_load_through_import_registry_and_builder(state_file, monkeypatch):
    features, path = state_file
    spec = _entry_for(path, monkeypatch)
    imported = import_weights(spec, path)
    assert imported == models_dir() / "vgg19-dcbb9e9d.pth"
    ex = registry.backbone("vgg19-imagenet", TAPS, "cpu")
    assert ex.trained and ex.name == "vgg19-imagenet" and len(ex.body) == 23
    x = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = features[:23]((x - mean) / std)
        got = ex(x)["relu4_2"]
    # Winograd layers and channels-last against torch's NCHW convolutions: 5e-7 relative when measured;
    # weights that were not loaded would be off by the whole activation.
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-5
    assert expected.abs().max() > 0.01  # a real activation, not a vanishing one


def test_imagenet_loader_refuses_a_file_with_another_digest(state_file):
    _, path = state_file
    with pytest.raises(ChecksumError):  # the real entry's digest prefix is dcbb9e9d
        import_weights(registry.get_model("vgg19-imagenet"), path)
    models_dir().mkdir(parents=True)
    shutil.copyfile(path, models_dir() / "vgg19-dcbb9e9d.pth")  # put there by hand, not imported
    with pytest.raises(ChecksumError, match="does not match"):
        registry.backbone("vgg19-imagenet", TAPS)


def test_imagenet_loader_refuses_a_non_vgg_file(tmp_path, monkeypatch):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    import_weights(_entry_for(path, monkeypatch), path)
    with pytest.raises(ChecksumError, match="shape|no tensor"):
        registry.backbone("vgg19-imagenet", TAPS)


def test_missing_imagenet_weights_name_the_file_and_the_import_command():
    with pytest.raises(WeightsMissingError) as info:
        registry.backbone("vgg19-imagenet", TAPS)
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
