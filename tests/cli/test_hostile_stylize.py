"""Hostile and careless use of `facestyle stylize`, the real CLI in a subprocess per case (issue 22).

The helpers and the read-only fixture are test_hostile_cli.py's: every case asserts the exit code, no
"Traceback", the first line of the message, and that every file of the workspace is byte-identical
afterwards except the ones the command was meant to write. The workspace here is a small content photo
and a style painting from the shared set, links to them, and odd shapes made here. No case allocates
the memory it is refused for: the memory model refuses it before any work.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import test_hostile_cli
from PIL import Image
from test_hostile_cli import Outcome, hostile

from facestyle.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE

read_only_work = test_hostile_cli.read_only_work  # its fixture: ``work`` (below) made read-only

TINY = ["--backbone", "vgg19-random", "--steps", "1", "--size", "32", "-q"]


@pytest.fixture
def work(tmp_path: Path, shared_data: Path) -> Path:
    """photos/content.png (96x72), photos/style.jpg (64x40), links to the content, odd shapes, and an
    empty gallery/ (the read-only fixture expects one)."""
    root = tmp_path / "work"
    photos = root / "photos"
    photos.mkdir(parents=True)
    (root / "gallery").mkdir()
    with Image.open(shared_data / "style" / "content" / "tubingen.jpg") as im:
        im.convert("RGB").resize((96, 72)).save(photos / "content.png")
    with Image.open(shared_data / "style" / "styles" / "starry-night.jpg") as im:
        im.convert("RGB").resize((64, 40)).save(photos / "style.jpg")
    (photos / "link.png").symlink_to("content.png")
    os.link(photos / "content.png", photos / "hard.png")
    strip = np.tile(np.linspace(0, 255, 10000, dtype=np.uint8)[None, :, None], (200, 1, 3))
    Image.fromarray(strip).save(photos / "strip.png")  # 10000x200
    Image.fromarray(strip[:1, :5000]).save(photos / "line.png")  # 5000x1
    return root


def stylize(*args: object) -> list[object]:
    """``stylize`` of the content and style photos at the defaults (512 px, 300 steps: minutes of work).
    The note on the default backbone is said only once every check has passed, so a refusal without it
    shows the run never started (:func:`never_started`)."""
    return ["stylize", "photos/content.png", "photos/style.jpg", *args]


def never_started(out: Outcome) -> None:
    """The refusal came before the backbone was built: the run's first words never appeared."""
    assert "note: backbone" not in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


# ---- never overwrite an input -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "output",
    [
        "photos/content.png",
        "photos/style.jpg",
        "photos/link.png",  # a symbolic link to the content
        "photos/hard.png",  # a hard link to it
        "photos/../photos/./content.png",  # another spelling
    ],
)
def test_an_input_is_never_the_output(work: Path, output: str) -> None:
    shown = re.escape(str(Path(output)))  # as the CLI shows it: "./" dropped, ".." kept
    hostile(work, stylize("-o", output, *TINY), EXIT_USAGE,
            rf"^error: --output {shown} is one of the inputs \(.*\); it would be overwritten")  # fmt: skip


def test_an_input_as_the_output_through_its_absolute_path(work: Path) -> None:
    target = work / "photos" / "content.png"
    hostile(work, stylize("-o", target, *TINY), EXIT_USAGE, r"^error: --output .* is one of the inputs")


def test_a_snapshot_is_never_an_input(work: Path) -> None:
    shutil.copy(work / "photos" / "content.png", work / "photos" / "out.00002.png")
    args = ["stylize", "photos/out.00002.png", "photos/style.jpg", "-o", "photos/out.png"]
    hostile(work, [*args, *TINY, "--steps", "4", "--save-every", "2"], EXIT_USAGE,
            r"^error: --output photos/out.00002.png is one of the inputs")  # fmt: skip


def test_overwrite_allows_replacing_an_input(work: Path) -> None:
    before = (work / "photos" / "content.png").read_bytes()
    hostile(work, stylize("-o", "photos/content.png", *TINY, "--overwrite"), EXIT_OK, "",
            writes=["photos/content.png", "photos/hard.png"])  # fmt: skip
    after = work / "photos" / "content.png"
    assert after.read_bytes() != before and Image.open(after).size == (32, 24)


# ---- outputs checked before the work --------------------------------------------------------------------
def test_a_missing_output_directory_is_refused_at_once(work: Path) -> None:
    out = hostile(work, stylize("-o", "missing/x.png"), EXIT_BAD_INPUT,
            r"^error: missing: output directory does not exist$")  # fmt: skip
    never_started(out)


def test_an_unwritable_output_directory_is_refused_at_once(read_only_work: tuple[Path, str]) -> None:
    view, how = read_only_work
    out = hostile(view, stylize("-o", view / "out.png"), EXIT_BAD_INPUT,
            r"output directory is not writable$", cwd=view)  # fmt: skip
    never_started(out)


# ---- memory -------------------------------------------------------------------------------------------
def test_a_size_that_does_not_fit_in_memory_is_refused_with_one_that_does(work: Path) -> None:
    out = hostile(work, stylize("-o", "out.png", "--size", "6000"), EXIT_USAGE,
                  r"^error: --size 6000 needs ~\d+ GiB; \$FACESTYLE_MEMORY_AVAILABLE allows 4\.0 GiB; "
                  r"at most --size \d+ fits$",
                  env={"FACESTYLE_MEMORY_AVAILABLE": "4G"})  # fmt: skip
    never_started(out)
    fits = int(out.first_line.rsplit("--size ", 1)[1].split()[0])
    assert 512 < fits < 2048  # ~1.5 GiB at 512 px, ~13 GiB at 2048 px (docs/style-memory.md)


def test_size_100000_is_refused_by_the_model_on_any_machine(work: Path) -> None:
    out = hostile(work, stylize("-o", "out.png", "--size", "100000"), EXIT_USAGE,
            r"^error: --size 100000 needs ~\d{4,} GiB; .*; at most --size \d+ fits$")  # fmt: skip
    never_started(out)


# ---- odd shapes: refused, saying which size works; the suggested size then works -------------------------
def test_a_long_thin_photo_is_refused_with_the_size_that_works(work: Path) -> None:
    args = [
        "stylize",
        "photos/strip.png",
        "photos/style.jpg",
        "-o",
        "out.png",
        "--backbone",
        "vgg19-random",
        "-q",
    ]
    hostile(work, args, EXIT_USAGE,
            r"^error: --size 512 makes the content's short side 10 px \(image 10000x200\); "
            r"at least 16 px are needed: use --size 775 or more$")  # fmt: skip
    hostile(work, [*args, "--size", "775", "--steps", "1", "-q"], EXIT_OK, "", writes=["out.png"])
    assert Image.open(work / "out.png").size == (775, 16)


def test_a_one_pixel_line_is_refused_in_one_line(work: Path) -> None:
    hostile(work, ["stylize", "photos/line.png", "photos/style.jpg", "-o", "out.png", "-q"], EXIT_USAGE,
            r"^error: --size 512 makes the content's short side 1 px \(image 5000x1\); at least 16 px are "
            r"needed, which takes --size \d+; that needs ~\d+ GiB and .*: crop the content")  # fmt: skip
    hostile(work, ["stylize", "photos/content.png", "photos/line.png", "-o", "out.png", "-q"], EXIT_USAGE,
            r"^error: --size 512 with --style-scale 1.0 makes the style image's short side 1 px "
            r"\(image 5000x1\)")  # fmt: skip


# ---- numbers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "first_line"),
    [
        (["--style-blend", "nan,1"], r"^error: --style-blend nan,1.0 must be finite numbers$"),
        (["--content-weight", "nan"], r"^error: --content-weight nan must be a finite number, 0 or more$"),
        (["--style-weight", "inf"], r"^error: --style-weight inf must be a finite number, 0 or more$"),
        (["--style-blend=-1,2"], r"^error: --style-blend -1.0,2.0: the weights must be non-negative"),
    ],
)
def test_weights_and_blends_that_are_not_finite_or_negative(work: Path, flags, first_line) -> None:
    two_styles = ["stylize", "photos/content.png", "photos/style.jpg", "photos/link.png", "-o", "out.png"]
    hostile(work, [*two_styles, *flags], EXIT_USAGE, first_line)
