"""Last-stage fine-tuning: untouched, it reproduces the frozen embedder; trained, it classifies, through
the library (:class:`Classifier` with ``fine_tune_epochs``) and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facestyle.heads.classify import Classifier, feature_source
from facestyle.heads.finetune import LastStage, stage_inputs, tune_last_stage
from facestyle.io.images import load_image

SUBJECTS = 10


@pytest.fixture(scope="module")
def att_chips(att_dir: Path):
    source = feature_source("dlib-resnet-v1", no_face="whole", cache=False)
    chips, labels = [], []
    for k in range(SUBJECTS):
        for i in (1, 2, 3):
            res = source.chip(att_dir / f"s{k + 1}" / f"{i}.pgm")
            assert res.status == "ok", res
            chips.append(res.chip)
            labels.append(k)
    return source, np.stack(chips), np.array(labels)


@pytest.fixture(scope="module")
def att10(att_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Subjects 1..10, images 1..3 each, as symlinks."""
    data = tmp_path_factory.mktemp("att10")
    for k in range(1, SUBJECTS + 1):
        (data / f"s{k}").mkdir()
        for i in (1, 2, 3):
            os.symlink(att_dir / f"s{k}" / f"{i}.pgm", data / f"s{k}" / f"{i}.pgm")
    return data


def test_untrained_last_stage_equals_frozen_embedder(att_chips) -> None:
    source, chips, _ = att_chips
    net = source.embedder.module
    acts = stage_inputs(net, chips[:6])
    assert tuple(acts.shape) == (6, 256, 4, 4) and acts.device.type == "cpu"
    with torch.no_grad():
        ours = LastStage(net, 3).eval().embed(acts).numpy()
    ref = source.embedder.embed_chips(chips[:6])
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert tuple(stage_inputs(net, chips[:0]).shape) == (0, 256, 4, 4)


def test_fine_tuned_last_stage_classifies_held_out_faces(att_chips) -> None:
    source, chips, labels = att_chips
    net = source.embedder.module
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acts = stage_inputs(net, chips)
    train = np.arange(len(labels)) % 3 == 0  # image 1 of each subject: one-shot
    model, _ = tune_last_stage(acts[train], labels[train], net, SUBJECTS, epochs=40)
    with torch.no_grad():
        pred = model(acts[~train]).argmax(1).numpy()
    # Measured 1.00 (20 held-out images); a mistake or two is tolerated.
    assert (pred == labels[~train]).mean() >= 0.9
    # The shared embedder was not modified: fine-tuning works on copies.
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    # The copies did move.
    assert not torch.equal(model.fc.weight, net.fc.weight.float().cpu())


def test_classifier_fine_tune_save_load_predict(att10: Path, tmp_path: Path) -> None:
    clf = Classifier.train(att10, train_per_class=1, no_face="whole", fine_tune_epochs=40)
    m = clf.metrics
    assert m["fine_tune_epochs"] == 40 and m["n_test"] == 2 * SUBJECTS and m["n_skipped"] == 0
    assert m["accuracy"] >= 0.9  # measured 1.00
    assert set(clf.fine_tuned) == {"block", "fc"}
    loaded = Classifier.load(clf.save(tmp_path / "tuned.pt"))
    assert loaded.fine_tuned is not None and loaded.to_dict() == clf.to_dict()
    probe = att10 / "s4" / "3.pgm"
    preds = loaded.predict([probe, load_image(probe)], top_k=2)
    assert [p.top[0][0] for p in preds] == ["s4", "s4"]
    np.testing.assert_allclose([p for _, p in preds[0].top], [p for _, p in preds[1].top], atol=1e-6)
    # The freshly trained classifier (its own tuned stage, not the file's) gives the same numbers.
    fresh = clf.predict(probe, top_k=2)[0]
    np.testing.assert_allclose([p for _, p in fresh.top], [p for _, p in preds[0].top], atol=1e-6)


def test_cli_fine_tune_train_and_predict(att10: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facestyle.cli import app

    head = tmp_path / "tuned.pt"
    runner = CliRunner()
    args = [
        "classify",
        "train",
        str(att10),
        "--out",
        str(head),
        "--train-per-class",
        "1",
        "--fine-tune",
        "40",
    ]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["fine_tune_epochs"] == 40 and report["n_test"] == 2 * SUBJECTS
    assert report["accuracy"] >= 0.9  # measured 1.00
    res = runner.invoke(app, ["classify", "predict", str(head), str(att10 / "s4" / "3.pgm"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["top"][0]["class"] == "s4"
    res = runner.invoke(app, [*args[:-2], "--fine-tune", "5", "--backbone", "vgg19-random"])
    assert res.exit_code == 2 and "dlib-resnet-v1" in res.stderr and "Traceback" not in res.output
