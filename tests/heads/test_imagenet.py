"""ImageNet labels for any image (``facestyle.heads.imagenet``, ``classify predict --imagenet``) on the
real content photos of the style set.

Measured with mobilenet-v2-imagenet (torchvision's IMAGENET1K_V1 file), top-5:
golden_gate.jpg: suspension bridge 0.507, pier 0.460, container ship 0.011, steel arch bridge 0.009,
promontory 0.003; tubingen.jpg: palace 0.443, castle 0.374, lakeside 0.048, gondola 0.042,
monastery 0.029. The assertions leave room (a label in the top 2, probability >= 0.3), yet a wrong
preprocessing (no ImageNet normalisation, BGR, a squashed image) or another category order fails them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facestyle.errors import ParameterError
from facestyle.heads.imagenet import ImageNetClassifier, imagenet_input, predict_imagenet
from facestyle.io.images import load_image


@pytest.fixture(scope="session")
def content_dir(shared_data: Path) -> Path:
    return shared_data / "style" / "content"


@pytest.fixture(scope="module")
def imagenet() -> ImageNetClassifier:
    return ImageNetClassifier("cpu")


@pytest.mark.parametrize("shape", [(768, 1024), (112, 92), (300, 255)])
def test_input_is_torchvisions_imagenet1k_v1_transform(shape: tuple[int, int], content_dir: Path) -> None:
    """Bit for bit what torchvision's own transform makes of the same uint8 tensor (down- and
    up-sampling, odd sides)."""
    from torchvision.models import MobileNet_V2_Weights

    image = load_image(content_dir / "tubingen.jpg")[: shape[0], : shape[1]]
    reference = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()(
        torch.from_numpy(image.copy()).permute(2, 0, 1)
    )
    ours = imagenet_input(image)
    assert ours.shape == (3, 224, 224)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_labels_of_real_photos(imagenet: ImageNetClassifier, content_dir: Path, tmp_path: Path) -> None:
    bridge, town = content_dir / "golden_gate.jpg", content_dir / "tubingen.jpg"
    missing = tmp_path / "missing.jpg"
    preds = imagenet.predict([bridge, load_image(town), missing], top_k=5)
    assert [p.status for p in preds] == ["ok", "ok", "error"]
    assert [p.path for p in preds] == [str(bridge), "<array 1>", str(missing)]
    top = [c for c, _ in preds[0].top]
    # Measured: suspension bridge 0.507, pier 0.460.
    assert top[0] == "suspension bridge" and "pier" in top[:2], preds[0].top
    assert preds[0].top[0][1] >= 0.3
    # Measured: palace 0.443, castle 0.374.
    assert {c for c, _ in preds[1].top[:2]} == {"palace", "castle"}, preds[1].top
    for p in preds[:2]:
        probs = [q for _, q in p.top]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert preds[2].top == [] and "no such file" in preds[2].error
    assert len(imagenet.classes) == 1000

    # One image alone, a file and its array agree; the function is the class.
    alone = predict_imagenet(bridge, top_k=2, device="cpu")
    assert len(alone) == 1 and [c for c, _ in alone[0].top] == top[:2]
    from_array = imagenet.predict(load_image(bridge), top_k=2)[0]
    np.testing.assert_allclose([q for _, q in from_array.top], [q for _, q in alone[0].top], atol=1e-6)
    with pytest.raises(ParameterError, match="top_k=0 must be at least 1"):
        imagenet.predict([bridge], top_k=0)


def test_cli_predict_imagenet(content_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facestyle.cli import app

    runner = CliRunner()
    bridge, town = str(content_dir / "golden_gate.jpg"), str(content_dir / "tubingen.jpg")
    res = runner.invoke(app, ["classify", "predict", "--imagenet", bridge, "--json"])
    assert res.exit_code == 0, res.output
    one = json.loads(res.stdout)  # one image: one document, the shape of a head's prediction
    assert set(one) == {"image", "status", "top"} and one["image"] == bridge and one["status"] == "ok"
    assert len(one["top"]) == 5 and set(one["top"][0]) == {"class", "probability"}  # default top 5
    assert one["top"][0]["class"] == "suspension bridge"

    missing = tmp_path / "missing.jpg"
    res = runner.invoke(
        app, ["classify", "predict", "--imagenet", bridge, town, str(missing), "-k", "2", "--json"]
    )
    assert res.exit_code == 5, res.output  # the worst image's code: unreadable
    rows = json.loads(res.stdout)
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert [len(r["top"]) for r in rows] == [2, 2, 0] and str(missing) in rows[2]["error"]
    assert str(missing) in res.stderr and "Traceback" not in res.output

    res = runner.invoke(app, ["classify", "predict", "--imagenet", town, "--top-k", "1"])
    assert res.exit_code == 0
    assert res.stdout.strip() == f"{town}: palace 0.443"

    # A head file and --imagenet are refused together; an image where the head belongs says how.
    res = runner.invoke(app, ["classify", "predict", "--imagenet", str(tmp_path / "head.pt"), bridge])
    assert res.exit_code == 2 and res.stdout == ""
    assert "either a head file or --imagenet, not both" in res.stderr and "head.pt" in res.stderr
    res = runner.invoke(app, ["classify", "predict", bridge])
    assert res.exit_code == 2 and "--imagenet" in res.stderr and "not a head file" in res.stderr
    res = runner.invoke(app, ["classify", "predict", str(tmp_path / "head.pt")])
    assert res.exit_code == 2 and "at least one image" in res.stderr
    res = runner.invoke(app, ["classify", "predict", "--imagenet", bridge, "--top-k", "0"])
    assert res.exit_code == 2 and res.stderr.strip() == "error: --top-k 0 must be at least 1"
