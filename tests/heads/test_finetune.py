"""Last-stage fine-tuning: untouched, it reproduces the frozen embedder; trained, it classifies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facestyle.heads.features import make_backbone
from facestyle.heads.finetune import LastStage, fine_tune, frozen_part
from facestyle.io.images import load_image

SUBJECTS = 10


@pytest.fixture(scope="module")
def att_chips(att_dir: Path):
    backbone = make_backbone("dlib-resnet-v1", no_face="whole")
    chips, labels = [], []
    for k in range(SUBJECTS):
        for i in (1, 2, 3):
            chips.append(backbone.chip(load_image(att_dir / f"s{k + 1}" / f"{i}.pgm")))
            labels.append(k)
    return backbone, np.stack(chips), np.array(labels)


def test_untrained_last_stage_equals_frozen_embedder(att_chips) -> None:
    backbone, chips, _ = att_chips
    net = backbone._pipeline().embedder.module
    acts = frozen_part(chips[:6], net)
    assert tuple(acts.shape) == (6, 256, 4, 4)
    with torch.no_grad():
        ours = LastStage(net, 3).eval().embed(acts).numpy()
    ref = backbone._pipeline().embedder.embed_chips(chips[:6])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_fine_tuned_last_stage_classifies_held_out_faces(att_chips) -> None:
    backbone, chips, labels = att_chips
    net = backbone._pipeline().embedder.module
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acts = frozen_part(chips, net)
    train = np.arange(len(labels)) % 3 == 0  # image 1 of each subject: one-shot
    model, _ = fine_tune(acts[train], labels[train], net, SUBJECTS, epochs=40)
    with torch.no_grad():
        pred = model(acts[~train]).argmax(1).numpy()
    # Measured 1.00 (20 held-out images); a mistake or two is tolerated.
    assert (pred == labels[~train]).mean() >= 0.9
    # The shared embedder was not modified: fine-tuning works on copies.
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    # The copies did move.
    assert not torch.equal(model.fc.weight, net.fc.weight.float())


def test_cli_fine_tune_train_and_predict(att_dir: Path, tmp_path: Path) -> None:
    import json
    import os

    from typer.testing import CliRunner

    from facestyle.cli import app

    data = tmp_path / "att10"
    for k in range(1, SUBJECTS + 1):
        (data / f"s{k}").mkdir(parents=True)
        for i in (1, 2, 3):
            os.symlink(att_dir / f"s{k}" / f"{i}.pgm", data / f"s{k}" / f"{i}.pgm")
    head = tmp_path / "tuned.pt"
    runner = CliRunner()
    args = ["classify", "train", str(data), "--out", str(head), "--train-per-class", "1", "--fine-tune", "40"]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["fine_tune_epochs"] == 40 and report["n_test"] == 2 * SUBJECTS
    assert report["accuracy"] >= 0.9  # measured 1.00
    res = runner.invoke(app, ["classify", "predict", str(head), str(data / "s4" / "3.pgm"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["top"][0]["class"] == "s4"
    res = runner.invoke(app, [*args[:-2], "--fine-tune", "5", "--backbone", "vgg19-random"])
    assert res.exit_code == 2 and "dlib-resnet-v1" in res.output
