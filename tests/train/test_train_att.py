"""A short real training run on AT&T faces, through the `train` command and the checkpoint embedder.

The frozen backbone's features are computed once (the run caches them); a few epochs of the head then
take seconds. This test holds the mechanics to account: the head fits (the early-stopping people's
triplet loss falls), a later epoch is kept, and the checkpoint is an embedder everywhere. Whether
training helps people that neither training nor early stopping saw is test_finetune_claims.py's job.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from facestyle.cli import app
from facestyle.errors import EXIT_GALLERY

N_IDS, N_IMAGES = 20, 8


@pytest.fixture(scope="module")
def att_subset(att_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("att-subset")
    for s in range(1, N_IDS + 1):
        (root / f"s{s}").mkdir()
        for i in range(1, N_IMAGES + 1):
            (root / f"s{s}" / f"{i}.pgm").symlink_to(att_dir / f"s{s}" / f"{i}.pgm")
    return root


@pytest.mark.slow
def test_short_training_run_improves_held_out_people(att_subset: Path, tmp_path: Path):
    ckpt, curve = tmp_path / "att.pt", tmp_path / "curve.png"
    args = ["train", str(att_subset), "--out", str(ckpt), "--epochs", "8", "--patience", "8", "--views", "2"]
    args += [
        "--val-fraction",
        "0.25",
        "--p",
        "8",
        "--k",
        "4",
        "--lr",
        "0.003",
        "--plot",
        str(curve),
        "--json",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    hist = summary["history"]
    before, after = summary["before"], summary["after"]
    assert summary["val_identities"] == 5 and summary["train_identities"] == 15
    # The early-stopping people's triplet loss falls (measured 0.031 -> 0.0002 at the kept epoch 3);
    # their accuracy is already 1.000 before training, so it cannot show anything here.
    assert after["val_loss"] < 0.1 * before["val_loss"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert summary["best_epoch"] == 3  # measured; epoch 0 (the base model) is not what was kept
    assert hist[1]["train_loss"] > 0
    assert curve.read_bytes()[:4] == b"\x89PNG"

    # The checkpoint is a first-class embedder: base embedder + head, weights-only, with its metadata.
    from facestyle.embed.checkpoint import CheckpointEmbedder, read_checkpoint
    from facestyle.embed.loader import load_embedder

    raw = torch.load(ckpt, weights_only=True)
    assert set(raw) == {"format", "version", "meta_json", "head", "pair_head"}
    ck = read_checkpoint(ckpt)
    assert ck.meta["base_model"] == "dlib-resnet-v1" and ck.meta["options"]["lr"] == 0.003
    assert ck.meta["metrics"]["after"]["val_accuracy"] == after["val_accuracy"]
    emb = load_embedder(str(ckpt))
    assert isinstance(emb, CheckpointEmbedder) and emb.embedding_size == 128
    assert emb.default_threshold == pytest.approx(after["threshold"])
    base = load_embedder("dlib-resnet-v1")
    chips = np.zeros((2, 150, 150, 3), np.uint8)
    chips[1] = 200
    got = emb.embed_chips(chips)
    want = ck.head(torch.from_numpy(base.embed_chips(chips))).detach().numpy()
    assert np.allclose(got, want, atol=1e-5) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert not np.allclose(got, base.embed_chips(chips), atol=1e-3)  # the trained head changes embeddings

    # ... and the face commands take it wherever they take a model name.
    photo_a, photo_b = att_subset / "s1" / "1.pgm", att_subset / "s1" / "2.pgm"
    runner = CliRunner()
    out = runner.invoke(app, ["embed", str(photo_a), "--model", str(ckpt), "--json"])
    assert out.exit_code == 0, out.output
    vec = np.array(json.loads(out.stdout)["faces"][0]["embedding"])
    assert vec.shape == (128,) and abs(np.linalg.norm(vec) - 1) < 1e-4
    cmp = runner.invoke(app, ["compare", str(photo_a), str(photo_b), "--model", str(ckpt), "--json"])
    assert json.loads(cmp.stdout)["model"] == str(ckpt.resolve())
    gallery = tmp_path / "gallery"
    enr = runner.invoke(app, ["enroll", "s1", str(photo_a), "--model", str(ckpt), "--gallery", str(gallery)])
    assert enr.exit_code == 0, enr.output
    photo_c = str(att_subset / "s2" / "1.pgm")
    same_model = runner.invoke(app, ["enroll", "s2", photo_c, "--gallery", str(gallery)])
    assert same_model.exit_code == 0  # without --model, the gallery's own model (the checkpoint) is used
    mixed = runner.invoke(
        app, ["enroll", "s3", photo_c, "--model", "dlib-resnet-v1", "--gallery", str(gallery)]
    )
    assert mixed.exit_code == EXIT_GALLERY  # the checkpoint's gallery refuses the base model's embeddings


def test_train_rejects_bad_options(att_subset: Path, tmp_path: Path):
    res = CliRunner().invoke(
        app, ["train", str(att_subset), "--out", str(tmp_path / "m.pt"), "--mining", "easy"]
    )
    assert res.exit_code == 2 and "batch-hard" in res.output
    res = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.pt")])
    assert res.exit_code != 0 and "Traceback" not in res.output
