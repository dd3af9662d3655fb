"""``--crop detect|auto|whole`` on the face commands (issue 20): a tight crop that the detector misses
is found in auto (the default) and says how in --json; a bad mode is one line naming the flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facestyle.cli import app
from facestyle.errors import EXIT_NO_FACE, EXIT_OK, EXIT_USAGE
from facestyle.io.images import load_image, save_image

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory, att_dir: Path) -> Path:
    """The k = 1.2 tight crop of AT&T s1/1 as a PNG (MTCNN finds no face in it)."""
    from facestyle.api import detect_faces

    photo = load_image(att_dir / "s1" / "1.pgm")
    marks = detect_faces(photo, crop="detect")[0].landmarks
    lo, hi = marks.min(axis=0), marks.max(axis=0)
    c, s = (lo + hi) / 2, (hi - lo) * 1.2
    x1, y1 = np.round(c - s / 2).astype(int)
    x2, y2 = np.round(c + s / 2).astype(int)
    return save_image(tmp_path_factory.mktemp("crops") / "s1_1_tight.png", photo[y1:y2, x1:x2])


def test_detect_finds_a_tight_crop_in_auto_and_says_how(tight: Path) -> None:
    auto = run("detect", tight, "--json")
    assert auto.exit_code == EXIT_OK, auto.output
    (face,) = json.loads(auto.stdout)["faces"]
    assert face["found_by"] == "whole" and len(face["landmarks"]) == 5
    human = run("detect", tight, "--crop", "whole")
    assert human.exit_code == EXIT_OK and "found_by=whole" in human.stdout
    detect = run("detect", tight, "--crop", "detect", "--json")
    assert detect.exit_code == EXIT_NO_FACE
    assert json.loads(detect.stdout)["status"] == "no_face"


def test_embed_and_compare_report_found_by(tight: Path, att_dir: Path) -> None:
    emb = run("embed", tight, "--json")
    assert emb.exit_code == EXIT_OK
    assert json.loads(emb.stdout)["faces"][0]["found_by"] == "whole"
    cmp = run("compare", tight, att_dir / "s1" / "2.pgm", "--json", "--threshold", "0.85")
    data = json.loads(cmp.stdout)
    assert (data["found_by1"], data["found_by2"]) == ("whole", "detector")
    assert cmp.exit_code == EXIT_OK and data["same"] is True


@pytest.mark.parametrize("command", [["detect"], ["embed"], ["compare", "X"]])
def test_a_bad_mode_is_one_line_naming_the_flag(tight: Path, command: list[str]) -> None:
    args = [command[0], tight, *(tight for _ in command[1:]), "--crop", "tight"]
    result = run(*args)
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith("error: --crop tight is not a mode; use detect, auto or whole")
    assert "Traceback" not in result.output
