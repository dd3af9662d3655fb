"""Pairs-file parsing on the real LFW View 1 files and on small hand-written files."""

from __future__ import annotations

from pathlib import Path

import pytest

from facestyle.errors import UsageError
from facestyle.eval.pairs_file import read_pairs


def test_lfw_dev_test_parses_and_skips_the_missing_image(lfw_dir: Path):
    pl = read_pairs(lfw_dir / "pairsDevTest.txt", lfw_dir / "images")
    assert pl.format == "lfw" and pl.n_folds == 0 and not pl.warnings
    assert len(pl.pairs) + len(pl.skipped) == 1000
    assert len(pl.skipped) == 1
    sk = pl.skipped[0]
    assert sk.line == 585 and not sk.same and "Betsy_Coffin_0001.jpg" in sk.reason
    assert sum(p.same for p in pl.pairs) == 500
    first = pl.pairs[0]
    assert (
        first.same
        and first.path1.name == "Abdullah_Gul_0013.jpg"
        and first.path2.name == "Abdullah_Gul_0014.jpg"
    )
    assert len(pl.image_paths()) < 2 * len(pl.pairs)  # images shared between pairs are listed once


def test_lfw_dev_train_counts(lfw_dir: Path):
    pl = read_pairs(lfw_dir / "pairsDevTrain.txt", lfw_dir / "images")
    assert len(pl.pairs) + len(pl.skipped) == 2200
    assert sum(p.same for p in pl.pairs) == 1100 - sum(s.same for s in pl.skipped)


def _lfw_tree(tmp_path: Path) -> Path:
    for name, n in (("Ann_A", 2), ("Bob_B", 1)):
        (tmp_path / "img" / name).mkdir(parents=True)
        for i in range(1, n + 1):
            (tmp_path / "img" / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")
    return tmp_path / "img"


def test_lfw_view2_header_assigns_folds(tmp_path: Path):
    images = _lfw_tree(tmp_path)
    lines = ["2 1", "Ann_A 1 2", "Ann_A 1 Bob_B 1", "Ann_A 2 1", "Bob_B 1 Ann_A 2"]
    (tmp_path / "p.txt").write_text("\n".join(lines) + "\n")
    pl = read_pairs(tmp_path / "p.txt", images)
    assert pl.n_folds == 2
    assert [(p.same, p.fold) for p in pl.pairs] == [(True, 0), (False, 0), (True, 1), (False, 1)]


def test_lfw_fold_header_mismatch_is_an_error(tmp_path: Path):
    images = _lfw_tree(tmp_path)
    (tmp_path / "p.txt").write_text("2 1\nAnn_A 1 2\n")
    with pytest.raises(UsageError, match="2 folds"):
        read_pairs(tmp_path / "p.txt", images)


def test_lfw_malformed_line_names_the_line(tmp_path: Path):
    images = _lfw_tree(tmp_path)
    (tmp_path / "p.txt").write_text("1\nAnn_A 1 2\nAnn_A one Bob_B 1\n")
    with pytest.raises(UsageError, match=r"p.txt:3"):
        read_pairs(tmp_path / "p.txt", images)


def test_csv_with_header_relative_paths_and_missing_file(tmp_path: Path):
    images = _lfw_tree(tmp_path)
    rows = [
        "path1,path2,same",
        "Ann_A/Ann_A_0001.jpg,Ann_A/Ann_A_0002.jpg,1",
        f"{images}/Ann_A/Ann_A_0001.jpg,Bob_B/Bob_B_0001.jpg,false",
        "Ann_A/Ann_A_0009.jpg,Bob_B/Bob_B_0001.jpg,0",
    ]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    pl = read_pairs(tmp_path / "pairs.csv", images)
    assert pl.format == "csv"
    assert [(p.path1.name, p.path2.name, p.same) for p in pl.pairs] == [
        ("Ann_A_0001.jpg", "Ann_A_0002.jpg", True),
        ("Ann_A_0001.jpg", "Bob_B_0001.jpg", False),
    ]
    assert [s.line for s in pl.skipped] == [4] and "Ann_A_0009.jpg" in pl.skipped[0].reason
    assert len(pl.image_paths()) == 3


def test_csv_bad_label_is_an_error(tmp_path: Path):
    (tmp_path / "pairs.csv").write_text("a.jpg,b.jpg,1\na.jpg,b.jpg,maybe\n")
    with pytest.raises(UsageError, match="pairs.csv:2"):
        read_pairs(tmp_path / "pairs.csv")


def test_missing_pairs_file(tmp_path: Path):
    with pytest.raises(UsageError, match="not found"):
        read_pairs(tmp_path / "nope.txt")
