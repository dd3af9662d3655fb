"""Transfer-learning classification: metric arithmetic by hand, and a one-shot AT&T run end to end.

The AT&T test enrols ONE image per subject (40 classes) and classifies three others per subject from
the frozen dlib ResNet's embeddings. Measured held-out accuracy with split seeds 0..4: 1.000, 1.000,
1.000, 1.000, 0.992 (120 test images each); the assertion leaves room for two mistakes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facestyle.errors import UsageError
from facestyle.heads.classify import (
    TrainConfig,
    confusion_matrix,
    load_head,
    per_class_report,
    predict_files,
    predict_proba,
    save_confusion_png,
    save_head,
    scan_folder,
    stratified_split,
    train_classifier,
    train_head,
)
from facestyle.heads.features import make_backbone

IMAGES_PER_SUBJECT = 4


def test_confusion_and_report_hand_computed() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    rows = per_class_report(cm, ["a", "b", "c"])
    # class a: precision 2/2, recall 2/3; class b: precision 1/2, recall 1/2; class c: 1/2 and 1/1.
    assert rows[0]["precision"] == pytest.approx(1.0) and rows[0]["recall"] == pytest.approx(2 / 3)
    assert rows[0]["f1"] == pytest.approx(0.8)
    assert rows[1]["precision"] == pytest.approx(0.5) and rows[1]["recall"] == pytest.approx(0.5)
    assert rows[2]["precision"] == pytest.approx(0.5) and rows[2]["recall"] == pytest.approx(1.0)
    assert [r["support"] for r in rows] == [3, 2, 1]


def test_stratified_split_counts() -> None:
    labels = np.repeat(np.arange(4), 10)
    train, test = stratified_split(labels, train_per_class=1, seed=3)
    assert np.bincount(labels[train]).tolist() == [1, 1, 1, 1]
    assert np.bincount(labels[test]).tolist() == [9, 9, 9, 9]
    train, test = stratified_split(labels, test_fraction=0.3, seed=3)
    assert np.bincount(labels[test]).tolist() == [3, 3, 3, 3]
    assert not set(train) & set(test) and len(train) + len(test) == 40
    # Deterministic for a seed, different for another.
    assert stratified_split(labels, 0.3, seed=3)[1].tolist() == test.tolist()
    assert stratified_split(labels, 0.3, seed=4)[1].tolist() != test.tolist()
    with pytest.raises(UsageError):
        stratified_split(labels, test_fraction=1.5)


def test_train_head_learns_separable_features() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    labels = np.repeat(np.arange(3), 30)
    feats = centres[labels] + rng.normal(size=(90, 8))
    for hidden in (0, 16):
        head = train_head(
            feats[::2], labels[::2], 3, TrainConfig(hidden=hidden, epochs=100, standardize=True)
        )
        acc = (predict_proba(head, feats[1::2]).argmax(1) == labels[1::2]).mean()
        assert acc >= 0.95, f"hidden={hidden}: {acc}"
    # Standardisation statistics are stored in the head, from the training features.
    np.testing.assert_allclose(head.mean.numpy(), feats[::2].mean(0), rtol=1e-4, atol=1e-4)


def test_scan_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        scan_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(UsageError):
        scan_folder(tmp_path)


@pytest.fixture(scope="session")
def att_subset(att_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 40 AT&T subjects, images 1..4 each, as symlinks (the feature cache keys on the real file)."""
    root = tmp_path_factory.mktemp("att-subset")
    for subject in sorted(att_dir.glob("s*")):
        (root / subject.name).mkdir()
        for i in range(1, IMAGES_PER_SUBJECT + 1):
            os.symlink(subject / f"{i}.pgm", root / subject.name / f"{i}.pgm")
    return root


@pytest.fixture(scope="session")
def att_result(att_subset: Path, tmp_path_factory: pytest.TempPathFactory):
    # Session fixtures run before the per-test FACESTYLE_HOME isolation: give this one its own home so
    # the feature cache is not written into the user's.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACESTYLE_HOME", str(tmp_path_factory.mktemp("classify-home")))
        return train_classifier(att_subset, make_backbone("dlib-resnet-v1"), TrainConfig(), train_per_class=1)


def test_att_one_shot_accuracy(att_result) -> None:
    m = att_result.metrics
    assert m["n_classes"] == 40 and m["n_train"] == 40
    assert m["n_test"] + m["n_skipped"] == 40 * (IMAGES_PER_SUBJECT - 1)
    assert m["n_test"] >= 115
    assert m["accuracy"] >= 0.98, m["accuracy"]
    assert att_result.confusion.sum() == m["n_test"]
    assert np.trace(att_result.confusion) == round(m["accuracy"] * m["n_test"])


def test_head_file_roundtrip_and_predict(att_result, att_subset: Path, tmp_path: Path) -> None:
    path = save_head(att_result, tmp_path / "head.pt")
    loaded = load_head(path)
    assert loaded.classes == att_result.classes
    probe = np.random.default_rng(1).normal(size=(3, 128)).astype(np.float32)
    np.testing.assert_allclose(
        predict_proba(loaded.head, probe), predict_proba(att_result.head, probe), atol=1e-6
    )
    images = [att_subset / "s7" / "4.pgm", att_subset / "s23" / "3.pgm"]
    preds = predict_files(loaded, images, top_k=3)
    assert [p.top[0][0] for p in preds] == ["s7", "s23"]
    for p in preds:
        probs = [prob for _, prob in p.top]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    png = save_confusion_png(att_result.confusion, att_result.classes, tmp_path / "cm.png")
    assert png.stat().st_size > 5000


def test_load_head_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(UsageError):
        load_head(bad)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UsageError):
        load_head(tmp_path / "junk.pt")


def test_cli_train_and_predict(att_subset: Path, att_result, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from facestyle.cli import app

    runner = CliRunner()
    head = tmp_path / "head.pt"
    res = runner.invoke(
        app, ["classify", "train", str(att_subset), "--out", str(head), "--train-per-class", "1", "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    # Same features (from the cache: nothing recomputed) and same seed -> the library's result.
    assert report["features_computed"] == 0
    assert report["accuracy"] == pytest.approx(att_result.metrics["accuracy"])
    assert Path(report["confusion_png"]).is_file()
    res = runner.invoke(
        app, ["classify", "predict", str(head), str(att_subset / "s12" / "2.pgm"), "-k", "2", "--json"]
    )
    assert res.exit_code == 0, res.output
    pred = json.loads(res.stdout)
    assert pred["status"] == "ok" and pred["top"][0]["class"] == "s12" and len(pred["top"]) == 2
    res = runner.invoke(
        app, ["classify", "predict", str(tmp_path / "nope.pt"), str(att_subset / "s1" / "1.pgm")]
    )
    assert res.exit_code != 0 and "Traceback" not in res.output
