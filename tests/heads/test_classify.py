"""Transfer-learning classification: metric arithmetic by hand, parameter checks, and a one-shot AT&T
run end to end through the :class:`Classifier` facade and the CLI.

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

from facestyle.errors import ParameterError, UsageError
from facestyle.heads import classify
from facestyle.heads.classify import (
    Classifier,
    ClassifierOptions,
    confusion_matrix,
    fit_classifier_head,
    per_class_report,
    predict_proba,
    stratified_split,
)
from facestyle.io.images import load_image

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
    with pytest.raises(ParameterError, match=r"test_fraction=1\.5 must be between 0 and 1"):
        stratified_split(labels, test_fraction=1.5)


def test_fit_classifier_head_learns_separable_features() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 4
    labels = np.repeat(np.arange(3), 30)
    feats = centres[labels] + rng.normal(size=(90, 8))
    for hidden in (0, 16):
        head = fit_classifier_head(
            feats[::2], labels[::2], 3, ClassifierOptions(hidden=hidden, epochs=100, standardize=True)
        )
        acc = (predict_proba(head, feats[1::2]).argmax(1) == labels[1::2]).mean()
        assert acc >= 0.95, f"hidden={hidden}: {acc}"
    # Standardisation statistics are stored in the head, from the training features.
    np.testing.assert_allclose(head.mean.numpy(), feats[::2].mean(0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"test_fraction": 0.0}, "test_fraction=0.0 must be between 0 and 1"),
        ({"train_per_class": 0}, "train_per_class=0 must be at least 1"),
        ({"no_face": "maybe"}, "no_face='maybe' is not a policy"),
        ({"options": ClassifierOptions(epochs=0)}, "epochs=0 must be at least 1"),
        ({"options": ClassifierOptions(lr=float("nan"))}, "lr=nan must be positive and finite"),
        ({"options": ClassifierOptions(lr=float("inf"))}, "lr=inf must be positive and finite"),
        ({"options": ClassifierOptions(dropout=1.0)}, "dropout=1.0 must be at least 0 and below 1"),
        ({"fine_tune_epochs": -1}, "fine_tune_epochs=-1 must be 0"),
        (
            {"fine_tune_epochs": 3, "backbone": "vgg19-random"},
            "fine_tune_epochs=3 tunes the last stage of dlib-resnet-v1, not of backbone='vgg19-random'",
        ),
    ],
)
def test_train_checks_parameters_before_building_anything(
    kwargs: dict, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args, **kw):
        raise AssertionError("a model was built before the parameters were checked")

    monkeypatch.setattr(classify, "feature_source", no_model)
    # The folder does not exist either: the parameters are checked before it is read.
    with pytest.raises(ParameterError) as info:
        Classifier.train(tmp_path / "missing", **kwargs)
    assert message in str(info.value)


def test_train_folder_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classify, "feature_source", lambda *a, **k: pytest.fail("model built"))
    with pytest.raises(UsageError, match="not a directory"):
        Classifier.train(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "a.png").write_bytes(b"")
    with pytest.raises(UsageError, match="at least 2 sub-folder"):
        Classifier.train(tmp_path)


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
def classify_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FACESTYLE_HOME (feature cache) of the AT&T run, shared with the CLI test that reuses it."""
    return tmp_path_factory.mktemp("classify-home")


@pytest.fixture(scope="session")
def att_classifier(att_subset: Path, classify_home: Path) -> Classifier:
    # Session fixtures run before the per-test FACESTYLE_HOME isolation: give this one its own home so
    # the feature cache is not written into the user's.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACESTYLE_HOME", str(classify_home))
        return Classifier.train(att_subset, train_per_class=1)


def test_att_one_shot_accuracy(att_classifier: Classifier) -> None:
    m = att_classifier.metrics
    assert m["n_classes"] == 40 and m["n_train"] == 40
    assert m["n_test"] + m["n_skipped"] == 40 * (IMAGES_PER_SUBJECT - 1)
    assert m["n_skipped"] == len(att_classifier.skipped)
    assert m["n_test"] >= 115
    assert m["accuracy"] >= 0.98, m["accuracy"]
    assert att_classifier.classes == [f"s{k}" for k in sorted(range(1, 41), key=str)]
    cm = att_classifier.confusion
    assert cm.sum() == m["n_test"]
    assert np.trace(cm) == round(m["accuracy"] * m["n_test"])
    assert m["options"]["standardize"] is False  # face embeddings are used as they are
    # No backbone named: the folder of face photos gets the face embedder (measured: 24 of 24 sampled
    # images of this subset show one dominant face).
    assert m["backbone_probe"]["auto"] and m["backbone_probe"]["one_face"] >= 20, m["backbone_probe"]
    assert m["backbone_reason"].startswith("auto: ") and "dominant face" in m["backbone_reason"]
    assert att_classifier.to_dict()["backbone"] == {
        "name": "dlib-resnet-v1",
        "kind": "face",
        "detector": "mtcnn",
        "no_face": "skip",
        "crop": "auto",
    }


def test_save_load_predict_paths_and_arrays(
    att_classifier: Classifier, att_subset: Path, tmp_path: Path
) -> None:
    path = att_classifier.save(tmp_path / "head.pt")
    loaded = Classifier.load(path)
    assert loaded.classes == att_classifier.classes
    # The report survives the file: metrics, confusion matrix, skipped images.
    assert loaded.to_dict() == att_classifier.to_dict()
    np.testing.assert_array_equal(loaded.confusion, att_classifier.confusion)
    probe = np.random.default_rng(1).normal(size=(3, 128)).astype(np.float32)
    np.testing.assert_allclose(
        predict_proba(loaded.head, probe), predict_proba(att_classifier.head, probe), atol=1e-6
    )

    files = [att_subset / "s7" / "4.pgm", att_subset / "s23" / "3.pgm"]
    arrays = [load_image(f) for f in files]
    blank = np.full((112, 92, 3), 128, np.uint8)  # no face to find
    preds = loaded.predict([*files, *arrays, blank, tmp_path / "nope.jpg"], top_k=3)
    assert [p.status for p in preds] == ["ok"] * 4 + ["no_face", "error"]
    assert [p.top[0][0] for p in preds[:4]] == ["s7", "s23", "s7", "s23"]
    assert [p.path for p in preds[2:5]] == ["<array 2>", "<array 3>", "<array 4>"]
    for from_file, from_array in zip(preds[:2], preds[2:4], strict=True):
        assert [c for c, _ in from_file.top] == [c for c, _ in from_array.top]
        np.testing.assert_allclose([p for _, p in from_file.top], [p for _, p in from_array.top], atol=1e-6)
    for p in preds[:4]:
        probs = [prob for _, prob in p.top]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    assert preds[4].top == [] and preds[4].error is None
    assert preds[5].top == [] and "nope.jpg" in preds[5].error
    assert preds[5].to_dict() == {
        "image": str(tmp_path / "nope.jpg"),
        "status": "error",
        "top": [],
        "error": preds[5].error,
    }
    # One image may be passed alone; the freshly trained classifier agrees with the loaded one.
    alone = att_classifier.predict(arrays[0], top_k=3)
    assert len(alone) == 1 and alone[0].top[0][0] == "s7"
    np.testing.assert_allclose([p for _, p in alone[0].top], [p for _, p in preds[2].top], atol=1e-6)
    with pytest.raises(ParameterError, match="top_k=0 must be at least 1"):
        loaded.predict(files, top_k=0)

    png = loaded.save_confusion_png(tmp_path / "cm.png")
    assert png.stat().st_size > 5000


def test_load_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(UsageError, match="not a facestyle classifier head"):
        Classifier.load(bad)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UsageError):
        Classifier.load(tmp_path / "junk.pt")
    with pytest.raises(UsageError, match="not found"):
        Classifier.load(tmp_path / "missing.pt")


def test_cli_train_and_predict(
    att_subset: Path,
    att_classifier: Classifier,
    classify_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from facestyle.cli import app

    monkeypatch.setenv("FACESTYLE_HOME", str(classify_home))  # the library run's feature cache
    runner = CliRunner()
    head = tmp_path / "head.pt"
    res = runner.invoke(
        app, ["classify", "train", str(att_subset), "--out", str(head), "--train-per-class", "1", "--json"]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    # Same features (from the cache: nothing recomputed) and same seed -> the library's result.
    assert report["features_computed"] == 0
    assert report["accuracy"] == pytest.approx(att_classifier.metrics["accuracy"])
    assert Path(report["confusion_png"]).is_file() and report["head"] == str(head)
    expected = {
        k: v for k, v in att_classifier.to_dict().items() if k not in ("feature_seconds", "train_seconds")
    }
    expected["features_computed"] = 0
    assert {k: v for k, v in report.items() if k in expected} == expected
    assert report["options"]["epochs"] == 300

    res = runner.invoke(
        app, ["classify", "predict", str(head), str(att_subset / "s12" / "2.pgm"), "-k", "2", "--json"]
    )
    assert res.exit_code == 0, res.output
    pred = json.loads(res.stdout)
    assert pred["status"] == "ok" and pred["top"][0]["class"] == "s12" and len(pred["top"]) == 2
    assert set(pred) == {"image", "status", "top"}

    # A bad image: its error on stderr, a status code in the JSON, exit code 5 (bad input).
    missing = tmp_path / "missing.jpg"
    res = runner.invoke(
        app, ["classify", "predict", str(head), str(att_subset / "s12" / "2.pgm"), str(missing), "--json"]
    )
    assert res.exit_code == 5, res.output
    rows = json.loads(res.stdout)
    assert [r["status"] for r in rows] == ["ok", "error"] and str(missing) in rows[1]["error"]
    assert str(missing) in res.stderr and "Traceback" not in res.output
    res = runner.invoke(app, ["classify", "predict", str(head), str(missing)])
    assert res.exit_code == 5
    assert res.stdout == ""  # stdout holds results; the failure is told on stderr only
    assert "error:" in res.stderr and "no such file" in res.stderr

    res = runner.invoke(
        app, ["classify", "predict", str(tmp_path / "nope.pt"), str(att_subset / "s1" / "1.pgm")]
    )
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_cli_parameter_errors_name_flags(tmp_path: Path) -> None:
    """A library ParameterError is a one-line usage error (exit 2) that names the command's flag."""
    from typer.testing import CliRunner

    from facestyle.cli import app

    head = Classifier(
        classify.ClassifierHead(128, 2), ["a", "b"], {"name": "dlib-resnet-v1", "kind": "face"}, {}
    ).save(tmp_path / "head.pt")
    runner = CliRunner()
    res = runner.invoke(app, ["classify", "predict", str(head), str(tmp_path / "x.jpg"), "--top-k", "0"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == "error: --top-k 0 must be at least 1"
    assert "Traceback" not in res.output and res.stdout == ""
    res = runner.invoke(
        app,
        ["classify", "train", str(tmp_path), "--out", str(head), "--fine-tune", "5", "-b", "vgg19-random"],
    )
    assert res.exit_code == 2
    assert (
        "--fine-tune 5 tunes the last stage of dlib-resnet-v1, not of --backbone vgg19-random" in res.stderr
    )
    res = runner.invoke(app, ["classify", "train", str(tmp_path), "--out", str(head), "--lr", "nan"])
    assert res.exit_code == 2 and "--lr nan must be positive and finite" in res.stderr
