"""Hostile and careless use of the real CLI, one subprocess per case (issue 22).

Every case asserts the exit code, that no "Traceback" is printed, the first line of the message,
and that every file in the workspace (photos, gallery, outputs that already existed) is
byte-identical afterwards, except the files the command was meant to write. The workspace holds real
AT&T and LFW photos, images made here (two faces, no face, truncated, a 400 MP header) and a
two-person gallery made with the CLI itself.

Read-only storage is a read-only bind mount when the test runs as root (as in CI), else a directory
without write permission; ``-s`` prints which one ran. "Permission denied" is tested by running the
CLI as the unprivileged user ``nobody`` when we are root (root reads everything), else directly.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from made_files import header_only_png
from PIL import Image
from read_only import read_only_view

from facestyle.errors import (
    EXIT_BAD_INPUT,
    EXIT_GALLERY,
    EXIT_NO_FACE,
    EXIT_NO_MATCH,
    EXIT_OK,
    EXIT_USAGE,
)

CLI = str(Path(sys.executable).parent / "facestyle")  # the installed entry point, as users run it
CAFE_NFC, CAFE_NFD = "caf\u00e9", "cafe\u0301"


# ---- running and checking ---------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def first_line(self) -> str:
        lines = (self.stderr or self.stdout).splitlines()
        return lines[0] if lines else ""


def digests(root: Path) -> dict[str, str]:
    """Every regular file under ``root`` -> its SHA-256 (symlinks, FIFOs and devices are left out)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file() or not stat.S_ISREG(path.stat().st_mode):
            continue
        found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def run_cli(args: Iterable[object], cwd: Path, env: dict | None = None, **kw) -> Outcome:
    argv = [CLI, *(a if isinstance(a, bytes) else str(a) for a in args)]
    done = subprocess.run(
        argv, capture_output=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=600, **kw
    )
    return Outcome(
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def hostile(
    work: Path,
    args: Iterable[object],
    code: int,
    first_line: str,
    *,
    writes: Iterable[str] = (),
    env: dict | None = None,
    cwd: Path | None = None,
    **kw,
) -> Outcome:
    """Run one case and check it: exit ``code``, no traceback, the first line of the message matches
    the regex ``first_line``, and every file under ``work`` is unchanged except those in ``writes``
    (paths relative to ``work``; a new file elsewhere also fails)."""
    before = digests(work)
    out = run_cli(args, cwd or work, env, **kw)
    where = f"\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
    assert "Traceback" not in out.stdout + out.stderr, where
    assert out.code == code, f"exit {out.code}, expected {code}{where}"
    assert re.search(first_line, out.first_line), f"first line {out.first_line!r}{where}"
    after = digests(work)
    allowed = set(writes)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    changed = {p for p in changed if not p.endswith(("-wal", "-shm"))}  # SQLite's own side files
    assert changed <= allowed, f"changed unexpectedly: {sorted(changed - allowed)}{where}"
    return out


# ---- the workspace ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, att_dir: Path, lfw_dir: Path) -> Path:
    """Photos and a two-person gallery (s1, s2), made once; each test works on a copy."""
    root = tmp_path_factory.mktemp("hostile-template")
    photos = root / "photos"
    photos.mkdir()
    for name in ("1", "2", "3"):
        shutil.copy(att_dir / "s1" / f"{name}.pgm", photos / f"s1_{name}.pgm")
    shutil.copy(att_dir / "s2" / "1.pgm", photos / "s2_1.pgm")
    shutil.copy(att_dir / "s3" / "1.pgm", photos / "s3_1.pgm")
    lfw = sorted((lfw_dir / "images").rglob("*.jpg"))[0]
    shutil.copy(lfw, photos / "lfw.jpg")
    pair = np.hstack([np.asarray(Image.open(att_dir / f"s{k}" / "1.pgm").convert("RGB")) for k in (4, 5)])
    Image.fromarray(np.pad(pair, ((40, 40), (40, 40), (0, 0)), mode="edge")).save(photos / "two.png")
    Image.fromarray(np.full((160, 160, 3), 128, np.uint8)).save(photos / "blank.png")
    (photos / "truncated.jpg").write_bytes(lfw.read_bytes()[:600])
    (photos / "notes.jpg").write_text("not an image\n")
    header_only_png(photos / "bomb.png", 20_000, 20_000)  # 400 MP
    (root / "out").mkdir()
    (root / "out" / "existing.npy").write_bytes(b"keep me")
    for name, photo in (("s1", "s1_1.pgm"), ("s2", "s2_1.pgm")):
        made = run_cli(["enroll", name, photos / photo, "--gallery", root / "gallery"], root)
        assert made.code == EXIT_OK, made.stderr
    return root


@pytest.fixture
def work(template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "work"
    shutil.copytree(template, dest, symlinks=True)
    return dest


# ---- 3. read-only storage ---------------------------------------------------------------------------
@pytest.fixture
def read_only_work(work: Path) -> Iterator[tuple[Path, str]]:
    """``work`` made read-only: (path to use, how)."""
    with read_only_view(work) as (view, how):
        yield view, how


def test_read_only_gallery_reads_and_refuses_writes(read_only_work: tuple[Path, str]) -> None:
    view, _how = read_only_work
    g = ["--gallery", view / "gallery"]
    s1_2 = view / "photos" / "s1_2.pgm"
    hostile(view, ["identify", s1_2, *g], EXIT_OK, r"s1_2\.pgm: s1 ")
    hostile(view, ["verify", "s1", s1_2, *g], EXIT_OK, r"s1_2\.pgm: match for 's1'")
    hostile(view, ["gallery", "list", *g], EXIT_OK, r"^s1\s+1$")
    hostile(view, ["gallery", "stats", *g, "--json"], EXIT_OK, r"^\{")
    for write in (
        ["enroll", "s3", view / "photos" / "s3_1.pgm", *g],
        ["gallery", "remove", "s1", *g],
        ["gallery", "rename", "s1", "x", *g],
        ["gallery", "rebuild", *g],
    ):
        hostile(view, write, EXIT_GALLERY, r"^error: .*read-only gallery")


def test_read_only_working_directory_with_the_default_gallery(read_only_work: tuple[Path, str]) -> None:
    view, _how = read_only_work
    hostile(view, ["gallery", "list"], EXIT_OK, r"^s1\s+1$", cwd=view)
    hostile(view, ["identify", "photos/s1_3.pgm"], EXIT_OK, r"s1_3\.pgm: s1 ", cwd=view)
    hostile(view, ["gallery", "rebuild"], EXIT_GALLERY, r"read-only gallery", cwd=view)


# ---- 4. devices -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "why"),
    [
        ("cuda", "is not available on this machine"),
        ("cuda:1", "is not available on this machine"),
        ("mps", "is not available on this machine"),
        ("meta", "is not available on this machine"),
        ("bogus", "is not a device name"),
    ],
)
def test_devices_that_do_not_exist(work: Path, device: str, why: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("hardware: a GPU is present, so cuda is a real device here")
    for args in (
        ["detect", "photos/s1_1.pgm"],
        ["identify", "photos/s1_1.pgm", "--gallery", "gallery"],
    ):
        out = hostile(work, [*args, "--device", device], EXIT_USAGE, rf"^error: --device {device} {why}")
        assert out.first_line.endswith("available here: cpu")


# ---- 5. outputs checked before the work -------------------------------------------------------------
def test_outputs_are_checked_before_the_work(work: Path) -> None:
    photo = "photos/s1_1.pgm"
    hostile(work, ["embed", photo, "--out", "missing/e.npy"], EXIT_BAD_INPUT,
            r"^error: missing: output directory does not exist$")  # fmt: skip
    hostile(work, ["detect", photo, "--chips", "out/existing.npy"], EXIT_USAGE,
            r"^error: --chips out/existing.npy is a file, not a folder")  # fmt: skip
    # --crop took a folder before it took a mode (issue 20): the error says where chips went
    hostile(work, ["detect", photo, "--crop", "out/"], EXIT_USAGE,
            r"^error: --crop out/ is not a mode; use detect, auto or whole "
            r"\(aligned chips: --chips DIR\)$")  # fmt: skip
    hostile(work, ["detect", photo, "--draw", photo], EXIT_USAGE,
            r"^error: --draw photos/s1_1.pgm is one of the inputs")  # fmt: skip
    hostile(work, ["embed", photo, "--out", photo, "--overwrite"], EXIT_USAGE,
            r"^error: --out photos/s1_1.pgm must end in .npy")  # fmt: skip
    hostile(work, ["embed", photo, "--out", "out/existing.npy"], EXIT_OK, "", writes=["out/existing.npy"])
    assert np.load(work / "out" / "existing.npy").shape == (1, 128)


# ---- 6. numbers -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "2", "-1.5", "inf"])
def test_thresholds_outside_minus_one_to_one_are_refused(work: Path, value: str) -> None:
    expected = rf"^error: --threshold {value.replace('2', '2.0')} must be a number between -1 and 1"
    hostile(work, ["verify", "s1", "photos/s1_2.pgm", "-g", "gallery", f"--threshold={value}"],
            EXIT_USAGE, expected)  # fmt: skip
    hostile(work, ["identify", "photos/s1_2.pgm", "-g", "gallery", f"--threshold={value}"],
            EXIT_USAGE, expected)  # fmt: skip
    hostile(work, ["compare", "photos/s1_2.pgm", "photos/s2_1.pgm", f"--threshold={value}"],
            EXIT_USAGE, expected)  # fmt: skip


def test_a_threshold_that_accepts_anyone_is_warned_about(work: Path) -> None:
    out = hostile(work, ["verify", "s1", "photos/s3_1.pgm", "-g", "gallery", "--threshold=-1"], EXIT_OK,
                  r"^warning: --threshold -1.0 accepts")  # fmt: skip
    assert "match" in out.stdout  # what was asked is done, and said to be weak


def test_top_k_below_one_is_refused(work: Path) -> None:
    hostile(work, ["identify", "photos/s1_2.pgm", "-g", "gallery", "--top-k", "0"], EXIT_USAGE,
            r"^error: --top-k 0 must be at least 1$")  # fmt: skip


# ---- 7. identity mix-ups ----------------------------------------------------------------------------
def test_one_name_however_the_accent_is_typed(work: Path) -> None:
    g = ["--gallery", "gallery"]
    hostile(work, ["enroll", CAFE_NFC, "photos/s3_1.pgm", *g], EXIT_OK, rf"enrolled '{CAFE_NFC}' \(new",
            writes=["gallery/gallery.sqlite", "gallery/index.faiss"])  # fmt: skip
    out = hostile(work, ["enroll", CAFE_NFD, "photos/lfw.jpg", *g], EXIT_OK, "",
                  writes=["gallery/gallery.sqlite", "gallery/index.faiss"])  # fmt: skip
    assert out.stdout.strip().endswith(f"added a 2nd template to '{CAFE_NFC}'")
    hostile(work, ["enroll", "--new", CAFE_NFD, "photos/s1_3.pgm", *g], EXIT_GALLERY,
            rf"^error: '{CAFE_NFC}' is already enrolled \(2 templates\); --new refuses")  # fmt: skip
    hostile(work, ["enroll", "--add", "Alcie", "photos/s1_3.pgm", *g], EXIT_GALLERY,
            r"^error: 'Alcie' is not enrolled; --add only adds to an existing name$")  # fmt: skip
    listed = run_cli(["gallery", "list", *g], work).stdout.split()
    assert listed == [CAFE_NFC, "2", "s1", "1", "s2", "1"]
    hostile(work, ["gallery", "remove", CAFE_NFD, *g], EXIT_OK, "",
            writes=["gallery/gallery.sqlite", "gallery/index.faiss"])  # fmt: skip
    assert run_cli(["gallery", "list", *g], work).stdout.split() == ["s1", "1", "s2", "1"]


def test_the_same_photo_under_a_second_name_is_warned_about(work: Path) -> None:
    out = hostile(work, ["enroll", "sam", "photos/s1_1.pgm", "--gallery", "gallery"], EXIT_OK,
                  r"^warning: photos/s1_1.pgm is near-identical to a template of 's1' \(cosine 1.0000\)",
                  writes=["gallery/gallery.sqlite", "gallery/index.faiss"])  # fmt: skip
    assert "enrolled 'sam' (new identity)" in out.stdout


def test_names_that_are_not_text(work: Path) -> None:
    g = ["--gallery", "gallery"]
    hostile(work, ["enroll", b"caf\xe9", "photos/s3_1.pgm", *g], EXIT_USAGE,
            r"^error: name .* is not valid text")  # fmt: skip
    hostile(work, ["enroll", "a\x1bb", "photos/s3_1.pgm", *g], EXIT_USAGE,
            r"^error: name .* contains control characters")  # fmt: skip
    hostile(work, ["enroll", "   ", "photos/s3_1.pgm", *g], EXIT_USAGE, r"^error: a name cannot be empty")


# ---- 9. bad paths: the real reason, one line each, on stderr ------------------------------------------
def test_each_bad_path_gets_its_own_reason(work: Path) -> None:
    bad = work / "bad"
    bad.mkdir()
    os.mkfifo(bad / "fifo")
    (bad / "loop1").symlink_to("loop2")
    (bad / "loop2").symlink_to("loop1")
    (bad / "broken").symlink_to("nowhere")
    (bad / "folder").mkdir()
    cases = {
        "bad/folder": "is a directory, not an image file",
        "bad/fifo": r"is a named pipe \(FIFO\), not a regular file",
        "bad/loop1": "is a symbolic link loop",
        "bad/broken": "is a broken symbolic link",
        "/dev/null": "is a device file, not a regular file",
        "bad/missing.jpg": "no such file",
        "photos/notes.jpg": r"not an image file \(format not recognised\)",
        "photos/truncated.jpg": "cannot decode image",
        "photos/bomb.png": "image has 400,000,000 pixels, more than the 100,000,000 allowed",
    }
    out = hostile(work, ["detect", *cases, "photos/s1_1.pgm"], EXIT_BAD_INPUT, "^error: bad/folder: ")
    lines = out.stderr.splitlines()
    assert len(lines) == len(cases), out.stderr
    for line, (path, why) in zip(lines, cases.items(), strict=True):
        assert re.fullmatch(rf"error: {re.escape(path)}: {why}.*", line), line
    assert "s1_1.pgm" in out.stdout and "error" not in out.stdout  # results on stdout, errors not


def _without_root_file_access() -> None:
    """In the child before exec: drop root's power to read files regardless of their mode
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the capability bounding set, so that the CLI meets
    file permissions the way any other user does."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_permission_denied(work: Path) -> None:
    photo = work / "photos" / "s1_1.pgm"
    photo.chmod(0o000)
    root = os.geteuid() == 0
    print(
        "\npermission denied: "
        + ("root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH" if root else "the file's mode is 000")
    )
    hostile(work, ["detect", photo], EXIT_BAD_INPUT, rf"^error: {photo}: permission denied$",
            preexec_fn=_without_root_file_access if root else None)  # fmt: skip


def test_compare_reports_both_bad_images(work: Path) -> None:
    hostile(work, ["compare", "photos/notes.jpg", "bad.jpg"], EXIT_BAD_INPUT,
            r"^error: photos/notes.jpg: not an image file .*; bad.jpg: no such file$")  # fmt: skip


def test_faces_none_or_several(work: Path) -> None:
    g = ["--gallery", "gallery"]
    hostile(work, ["enroll", "x", "photos/blank.png", *g], EXIT_NO_FACE, r"^error: photos/blank.png: no face")
    hostile(work, ["enroll", "x", "photos/two.png", *g], EXIT_USAGE,
            r"^error: photos/two.png: 2 faces.*--largest")  # fmt: skip
    hostile(work, ["verify", "s1", "photos/blank.png", *g], EXIT_NO_FACE, r"no face")
    hostile(work, ["identify", "photos/two.png", *g], EXIT_NO_MATCH, r"^photos/two.png face 1: ")


def test_an_empty_home_never_writes_at_the_root(work: Path) -> None:
    existed = Path("/.cache").exists()
    empty = {"HOME": "", "FACESTYLE_HOME": "", "XDG_CACHE_HOME": ""}
    hostile(work, ["models", "list"], EXIT_OK, "", env=empty)
    assert Path("/.cache").exists() == existed


def test_every_path_parameter_leaves_its_checks_to_facestyle() -> None:
    """Typer checks a path's readability itself by default, in a boxed usage error (exit 2) that
    says neither why nor in our words; every path parameter turns that off so the loader's one line
    (permission denied, a directory, a FIFO ...) and exit code speak instead."""
    import typer.main

    from facestyle.cli import app

    def params(command, prefix=""):
        for name, sub in getattr(command, "commands", {}).items():
            yield from params(sub, f"{prefix} {name}")
        for param in getattr(command, "params", []):
            yield prefix.strip(), param

    checked = [
        f"{where}: {param.name}"
        for where, param in params(typer.main.get_command(app))
        if "Path" in str(param.type_descriptor.annotation)
        and getattr(param.type_descriptor.parameter_info, "readable", False)
    ]
    assert checked == []


# ---- classify: outputs, cache, predict ----------------------------------------------------------------
@pytest.fixture
def classes(work: Path) -> Path:
    """``work/classes/{a,b}``: three AT&T photos of two people."""
    for label in ("a", "b"):
        (work / "classes" / label).mkdir(parents=True)
    for name in ("1", "2", "3"):
        shutil.copy(work / "photos" / f"s1_{name}.pgm", work / "classes" / "a" / f"{name}.pgm")
    shutil.copy(work / "photos" / "s2_1.pgm", work / "classes" / "b" / "1.pgm")
    for name in ("2", "3"):
        Image.open(work / "photos" / "s2_1.pgm").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
            work / "classes" / "b" / f"{name}.png"
        )
    return work / "classes"


def test_classify_train_never_writes_over_a_training_image(work: Path, classes: Path) -> None:
    train = ["classify", "train", "classes", "--train-per-class", "2", "-b", "dlib-resnet-v1"]
    hostile(
        work, [*train, "-o", "classes/a/1.pgm"], EXIT_USAGE, r"^error: --out classes/a/1.pgm must end in \.pt"
    )
    hostile(work, [*train, "-o", "h.pt", "--confusion", "classes/b/2.png"], EXIT_USAGE,
            r"^error: --confusion classes/b/2.png is one of the inputs")  # fmt: skip
    hostile(
        work,
        [*train, "-o", "missing/h.pt"],
        EXIT_BAD_INPUT,
        r"^error: missing: output directory does not exist$",
    )
    assert not (work / "missing").exists()


def test_classify_train_with_an_unwritable_cache_still_trains(work: Path, classes: Path) -> None:
    """The feature cache is only a cache: a FACESTYLE_HOME that cannot be written costs time, not the run."""
    home = work / "home"
    (home / "cache" / "features").mkdir(parents=True)
    for folder in (home / "cache" / "features", home / "cache", home):
        folder.chmod(0o555)
    root = os.geteuid() == 0
    train = [
        "classify",
        "train",
        "classes",
        "-o",
        "h.pt",
        "--train-per-class",
        "2",
        "-b",
        "mobilenet-v2-imagenet",
    ]
    drop = _without_root_file_access if root else None
    hostile(work, train, EXIT_OK, r"^held-out accuracy", writes=["h.pt", "h.confusion.png"],
            env={"FACESTYLE_HOME": str(home)}, preexec_fn=drop)  # fmt: skip
    assert not any((home / "cache" / "features").iterdir())


def test_classify_predict_errors_on_stderr_only(work: Path, classes: Path) -> None:
    made = run_cli(["classify", "train", "classes", "-o", "h.pt", "--train-per-class", "2",
                    "-b", "dlib-resnet-v1", "--quiet"], work)  # fmt: skip
    assert made.code == EXIT_OK, made.stderr
    out = hostile(work, ["classify", "predict", "h.pt", "classes/a/3.pgm", "nope.jpg", "classes"],
                  EXIT_BAD_INPUT, r"^error: nope.jpg: no such file$")  # fmt: skip
    assert out.stdout.splitlines() == [f"classes/a/3.pgm: a {out.stdout.split()[-1]}"], out.stdout
    assert out.stderr.splitlines()[1] == "error: classes: is a directory, not an image file"
    hostile(work, ["classify", "predict", "h.pt", "classes/a/3.pgm", "--top-k", "0"], EXIT_USAGE,
            r"^error: --top-k 0 must be at least 1$")  # fmt: skip
    hostile(work, ["classify", "predict", "photos/notes.jpg", "classes/a/3.pgm"], EXIT_USAGE,
            r"^error: photos/notes.jpg is an image, not a head file")  # fmt: skip
    (work / "junk.pt").write_bytes(b"\x80\x04junk")
    hostile(work, ["classify", "predict", "junk.pt", "classes/a/3.pgm"], EXIT_USAGE,
            r"^error: junk.pt: not a readable classifier head")  # fmt: skip
