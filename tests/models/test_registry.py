"""One registry for everything loaded by name: every entry is complete, listed, and builds what it says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from facestyle.errors import UsageError
from facestyle.io.images import load_image
from facestyle.models import builders, registry


def test_every_entry_names_a_builder_in_the_builders_module() -> None:
    for spec in registry.list_models():
        for fn in (spec.build, spec.build_extractor):
            if fn is not None:
                assert fn.__module__ == builders.__name__, (spec.name, fn)
        assert spec.licence and spec.description
        assert all(len(f.sha256) in (8, 64) for f in spec.files), spec.name
        assert all(n in registry.MODELS for n in registry.NEEDS[spec.name])


def test_registry_lists_every_kind_including_the_grid_head() -> None:
    kinds = {m.name: m.roles for m in registry.list_models()}
    assert {"mtcnn", "haar", "grid-head"} <= {m.name for m in registry.list_models("detector")}
    assert {"dlib-resnet-v1", "facenet-vggface2"} <= {m.name for m in registry.list_models("embedder")}
    assert {"vgg19-imagenet", "vgg19-random", "dlib-resnet-v1"} <= {
        m.name for m in registry.list_models("backbone")
    }
    assert kinds["dlib-resnet-v1"] == ("embedder", "backbone")


def test_models_list_cli_shows_them_all() -> None:
    from facestyle.cli import app

    res = CliRunner().invoke(app, ["models", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert set(rows) == set(registry.MODELS)
    assert rows["haar"]["status"] == "ok" and rows["haar"]["files"][0]["source"] == "pip:cv2"
    assert rows["grid-head"]["user_weights"] and rows["grid-head"]["needs"] == ["dlib-resnet-v1"]
    assert rows["dlib-resnet-v1"]["taps"][0] == "block0" and rows["vgg19-random"]["trained"] is False


def test_unknown_and_wrong_kind_names_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="unknown model 'nope'; known models: dlib-resnet-v1"):
        registry.get_model("nope")
    with pytest.raises(UsageError, match="offers no feature taps"):
        registry.backbone("mtcnn")
    with pytest.raises(UsageError, match="grid head is trained by you"):
        registry.detector("grid-head")


def test_a_grid_head_file_is_a_detector_by_name_or_path(tmp_path: Path, lfw_dir: Path) -> None:
    import torch

    from facestyle.api import FacePipeline
    from facestyle.detect.grid import GridHead, GridHeadDetector, save_grid_head

    torch.manual_seed(0)
    head = GridHead()
    with torch.no_grad():  # every cell confident: the detector must report boxes
        head.body[-1].bias.view(1, 6)[:, 0] = 8.0
    path = save_grid_head(head.eval(), ["face"], tmp_path / "grid.pt")
    by_path = registry.detector(str(path))
    by_name = registry.detector("grid-head", weights=path)
    assert isinstance(by_path, GridHeadDetector) and isinstance(by_name, GridHeadDetector)
    image = load_image(lfw_dir / "images" / "AJ_Cook" / "AJ_Cook_0001.jpg")
    faces = by_path.detect(image)
    assert faces and [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    assert FacePipeline(detector=str(path)).detector.name == "grid-head"
