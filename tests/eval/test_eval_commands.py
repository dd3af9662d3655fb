"""`eval pairs`, `eval identify` and `calibrate` on small sets of real AT&T faces.

Each result is recomputed independently: embeddings through the product's public ``FacePipeline.face``
(not the evaluation code's extractor), and accuracy, rank-1 and thresholds by brute-force loops.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facestyle.cli import app

IDS = ["s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def pipeline():
    from facestyle.api import FacePipeline

    return FacePipeline()


@pytest.fixture(scope="module")
def reference_embeddings(att_dir: Path, pipeline) -> dict[str, np.ndarray]:
    """Embedding of every image used below, computed once through the public pipeline."""
    out = {}
    for ident in IDS + ["s7", "s8"]:
        for i in (1, 2, 3):
            rel = f"{ident}/{i}.pgm"
            out[rel] = pipeline.face(att_dir / rel, largest=True).embedding
    return out


def _write_pairs_csv(path: Path, att_dir: Path) -> list[tuple[str, str, bool]]:
    rows = []
    for ident in IDS:  # every same-person pair: 6 x 3 = 18
        rows += [(f"{ident}/1.pgm", f"{ident}/2.pgm", True), (f"{ident}/1.pgm", f"{ident}/3.pgm", True)]
        rows += [(f"{ident}/2.pgm", f"{ident}/3.pgm", True)]
    for a, b in zip(IDS, IDS[1:] + IDS[:1], strict=True):  # 18 different-person pairs
        rows += [(f"{a}/1.pgm", f"{b}/2.pgm", False), (f"{a}/2.pgm", f"{b}/3.pgm", False)]
        rows += [(f"{a}/3.pgm", f"{b}/1.pgm", False)]
    lines = ["path1,path2,same"] + [f"{a},{b},{int(s)}" for a, b, s in rows]
    lines.append("s1/99.pgm,s2/1.pgm,0")  # missing file: skipped, reported with its line
    path.write_text("\n".join(lines) + "\n")
    return rows


def _independent_kfold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Ten folds of consecutive same pairs and consecutive different pairs; exhaustive threshold search."""
    folds = np.empty(len(labels), int)
    for value in (True, False):
        idx = np.flatnonzero(labels == value)
        folds[idx] = [k * 10 // len(idx) for k in range(len(idx))]
    accs = []
    for k in range(10):
        test = folds == k
        s, y = scores[~test], labels[~test]
        ordered = np.sort(np.unique(s))
        cands = np.r_[ordered[0] - 1, (ordered[:-1] + ordered[1:]) / 2, ordered[-1] + 1]
        accs_train = [np.mean((s >= t) == y) for t in cands]
        best = [t for t, a in zip(cands, accs_train, strict=True) if a == max(accs_train)]
        thr = best[len(best) // 2]
        accs.append(np.mean((scores[test] >= thr) == labels[test]))
    return float(np.mean(accs))


def test_eval_pairs_csv_matches_independent_accuracy(tmp_path: Path, att_dir: Path, reference_embeddings):
    rows = _write_pairs_csv(tmp_path / "pairs.csv", att_dir)
    plot = tmp_path / "roc.png"
    res = CliRunner().invoke(
        app, ["eval", "pairs", str(tmp_path / "pairs.csv"), str(att_dir), "--json", "--plot", str(plot)]
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["n_pairs"] == 36 and report["n_same"] == 18
    assert [s["line"] for s in report["skipped"]] == [38] and "s1/99.pgm" in report["skipped"][0]["reason"]
    assert report["n_images"] == 18  # each image embedded once although it is in several pairs

    scores = np.array([float(reference_embeddings[a] @ reference_embeddings[b]) for a, b, _ in rows])
    labels = np.array([s for _, _, s in rows])
    assert report["accuracy"] == pytest.approx(_independent_kfold(scores, labels), abs=1e-9)
    wins = np.mean([(g > i) + 0.5 * (g == i) for g in scores[labels] for i in scores[~labels]])
    assert report["auc"] == pytest.approx(wins, abs=1e-4)
    assert report["accuracy"] > 0.8
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_eval_pairs_bad_file_is_one_line_error(tmp_path: Path):
    (tmp_path / "p.csv").write_text("a.jpg,b.jpg,maybe\n")
    res = CliRunner().invoke(app, ["eval", "pairs", str(tmp_path / "p.csv")])
    assert res.exit_code == 2
    assert "Traceback" not in res.output


def _identity_tree(root: Path, att_dir: Path, spec: dict[str, list[int]]) -> Path:
    for ident, images in spec.items():
        (root / ident).mkdir(parents=True)
        for i in images:
            (root / ident / f"{i}.pgm").symlink_to(att_dir / ident / f"{i}.pgm")
    return root


def test_eval_identify_matches_brute_force(tmp_path: Path, att_dir: Path, reference_embeddings):
    gallery = _identity_tree(tmp_path / "g", att_dir, {i: [1] for i in IDS})
    probes = _identity_tree(
        tmp_path / "p", att_dir, {**{i: [2, 3] for i in IDS}, "s7": [1, 2, 3], "s8": [1, 2]}
    )
    res = CliRunner().invoke(app, ["eval", "identify", str(gallery), str(probes), "--json", "--far", "0.2"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["n_known_probes"] == 12 and rep["n_unknown_probes"] == 5 and rep["n_gallery_identities"] == 6

    ref = reference_embeddings
    hits, best_known, unknown_best = 0, [], []
    for ident in IDS:
        for i in (2, 3):
            sims = {g: float(ref[f"{ident}/{i}.pgm"] @ ref[f"{g}/1.pgm"]) for g in IDS}
            top = max(sims, key=sims.get)
            hits += top == ident
            best_known.append((top == ident, sims[top]))
    for rel in ("s7/1.pgm", "s7/2.pgm", "s7/3.pgm", "s8/1.pgm", "s8/2.pgm"):
        unknown_best.append(max(float(ref[rel] @ ref[f"{g}/1.pgm"]) for g in IDS))
    assert rep["rank1"] == pytest.approx(hits / 12)
    op = rep["open_set"][0]
    # FAR 0.2 of 5 unknown probes: one may be accepted -> threshold just above the 2nd highest score
    # (1e-5: the reference embeddings come from another code path, equal to float32 rounding)
    ranked = sorted(unknown_best, reverse=True)
    assert ranked[1] - 1e-5 < op["threshold"] <= ranked[0] + 1e-5
    assert op["far"] == pytest.approx(0.2)
    expected_dir = np.mean([ok and s >= op["threshold"] for ok, s in best_known])
    assert op["dir"] == pytest.approx(expected_dir)


def test_calibrate_folder_stores_threshold_in_gallery(tmp_path: Path, att_dir: Path, reference_embeddings):
    from facestyle.gallery.gallery import Gallery

    data = _identity_tree(tmp_path / "d", att_dir, {i: [1, 2, 3] for i in IDS})
    Gallery.open(tmp_path / "gal").close()  # an empty gallery, not yet bound to a model
    res = CliRunner().invoke(
        app, ["calibrate", str(data), "--far", "0.05", "--gallery", str(tmp_path / "gal"), "--json"]
    )
    assert res.exit_code == 0, res.output
    cal = json.loads(res.stdout)
    keys = [f"{i}/{k}.pgm" for i in IDS for k in (1, 2, 3)]
    impostors = [
        float(reference_embeddings[a] @ reference_embeddings[b])
        for n, a in enumerate(keys)
        for b in keys[n + 1 :]
        if a.split("/")[0] != b.split("/")[0]
    ]
    assert cal["n_impostor"] == len(impostors) == 135 and cal["n_genuine"] == 18
    # FAR 5% of 135 impostor pairs: at most 6 accepted, and the threshold is as low as that allows
    accepted = sum(s >= cal["threshold"] + 1e-5 for s in impostors)
    assert accepted <= 6 and sorted(impostors)[-7] - 1e-5 < cal["threshold"]
    with Gallery.open(tmp_path / "gal", read_only=True) as g:
        assert g.threshold == pytest.approx(cal["threshold"])
    assert cal["stored_in"] == str(tmp_path / "gal")
