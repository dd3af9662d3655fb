"""Weights registry: package files found without importing the package, checksums enforced,
offline import for downloadable models, and facenet's real loading path with a file the test creates."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from facestyle.errors import ChecksumError, WeightsMissingError
from facestyle.models import registry
from facestyle.models.registry import get_model, path_of
from facestyle.models.weights import import_weights, load_torch_state, models_dir


def test_package_weights_found_without_importing_the_package():
    sys.modules.pop("face_recognition_models", None)
    path = path_of("dlib-resnet-v1")
    assert path.name == "dlib_face_recognition_resnet_model_v1.dat" and path.is_file()
    # find_spec only: the package's __init__ (which needs pkg_resources) never ran
    assert "face_recognition_models" not in sys.modules


def test_mtcnn_state_dicts_load_weights_only():
    state = load_torch_state(get_model("mtcnn"), "onet.pt")
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert any(k.startswith("conv1") for k in state)


class _Payload:
    """Unpickling this runs code (it recreates itself by calling ``_touch``): what a hostile file does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(marker: str) -> str:
    Path(marker).write_text("code ran")
    return marker


def test_a_pickle_with_code_is_refused_even_with_the_right_checksum(tmp_path, monkeypatch):
    """The checksum says the file is the one we expect; weights_only must still refuse to run code from
    it (a registry entry with a wrong digest, or a poisoned mirror, must not become code execution)."""
    from facestyle.errors import UsageError
    from facestyle.io.files import load_tensor_file

    marker = tmp_path / "marker"
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Payload(str(marker))}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = registry.MODELS["facenet-vggface2"]
    patched = dataclasses.replace(spec, files=(dataclasses.replace(spec.files[0], sha256=digest),))
    monkeypatch.setitem(registry.MODELS, "facenet-vggface2", patched)
    import_weights(patched, path)  # the checksum matches: the file is accepted into the cache
    with pytest.raises(ChecksumError, match="cannot be read as torch weights"):
        load_torch_state(patched)
    with pytest.raises(UsageError, match=r"not a readable checkpoint \(it holds Python objects"):
        load_tensor_file(path, "checkpoint")
    assert not marker.exists(), "unpickling ran the payload's code"


def test_missing_download_names_file_and_command():
    with pytest.raises(WeightsMissingError) as info:
        path_of("vgg19-imagenet")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message and "facestyle models import vgg19-imagenet" in message
    assert "\n" not in message


def test_import_rejects_wrong_checksum(tmp_path):
    bogus = tmp_path / "vgg19-dcbb9e9d.pth"
    bogus.write_bytes(b"not the weights")
    with pytest.raises(ChecksumError, match="matches no file"):
        import_weights(get_model("vgg19-imagenet"), bogus)
    assert not (models_dir() / "vgg19-dcbb9e9d.pth").exists()


@pytest.fixture
def facenet_file(tmp_path, monkeypatch):
    """A facenet-layout state dict (seeded, with the 8631-way logits layer the release file has), and a
    registry entry whose digest is that file's: exactly what `models import` would see for the real one."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=True, num_classes=8631).eval()
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save(net.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = registry.MODELS["facenet-vggface2"]
    patched = dataclasses.replace(spec, files=(dataclasses.replace(spec.files[0], sha256=digest),))
    monkeypatch.setitem(registry.MODELS, "facenet-vggface2", patched)
    return path, net


def test_facenet_import_then_embed(facenet_file):
    from facestyle.embed.embedder import _CACHE
    from facestyle.embed.loader import load_embedder

    path, reference = facenet_file
    with pytest.raises(WeightsMissingError):
        load_embedder("facenet-vggface2")
    target = import_weights(get_model("facenet-vggface2"), path)
    assert target.parent == models_dir() and target.stat().st_size == path.stat().st_size
    _CACHE.clear()
    embedder = load_embedder("facenet-vggface2")
    assert (embedder.input_size, embedder.embedding_size) == (160, 512)
    chips = np.random.default_rng(0).integers(0, 256, size=(3, 160, 160, 3), dtype=np.uint8)
    ours = embedder.embed_chips(chips)
    x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() - 127.5) / 128.0
    reference.classify = False
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(reference(x), dim=1).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    _CACHE.clear()


def test_corrupted_cache_file_is_refused(facenet_file):
    path, _ = facenet_file
    target = import_weights(get_model("facenet-vggface2"), path)
    with open(target, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00" * 16)
    with pytest.raises(ChecksumError, match="does not match"):
        path_of("facenet-vggface2")
