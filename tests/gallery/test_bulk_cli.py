"""`facestyle enroll-dir` and `facestyle enroll --from-csv` on real photos: killed with SIGKILL halfway
and run again (the real CLI in a subprocess, with its worker process), --json rows, exit codes, bad CSV
rows by line, and refusals that come before any model is loaded."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from test_bulk import ALL_PHOTOS, LFW_SEVERAL, ONE_FACE, make_people
from typer.testing import CliRunner

from facestyle.cli import app
from facestyle.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE
from facestyle.gallery import Gallery

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def cli_process(*args: object) -> subprocess.Popen:
    """The real CLI in a fresh interpreter, in a session of its own (so its workers die with it)."""
    argv = ["facestyle", *(str(a) for a in args)]
    code = f"import sys\nfrom facestyle.cli import main\nsys.argv = {argv!r}\nmain()\n"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        start_new_session=True,
    )


def json_lines(text: str) -> tuple[list[dict], dict | None]:
    """(photo rows, summary) of ``--json`` output; only complete lines count."""
    rows, summary = [], None
    for line in text.splitlines():
        data = json.loads(line)
        if "summary" in data:
            summary = data["summary"]
        else:
            rows.append(data)
    return rows, summary


def test_killed_halfway_then_run_again_finishes_without_duplicates(
    tmp_path: Path, att_dir: Path, lfw_dir: Path
) -> None:
    people = make_people(tmp_path, att_dir, lfw_dir)
    gallery = tmp_path / "g"
    args = ("enroll-dir", people, "--gallery", gallery, "--json", "--workers", "1", "--batch-size", "2")
    proc = cli_process(*args)
    seen: list[dict] = []
    assert proc.stdout is not None
    while sum(r["status"] == "ok" for r in seen) < 4:
        line = proc.stdout.readline()
        assert line.endswith("\n"), f"the run ended before it was killed: {proc.stderr.read()}"  # type: ignore[union-attr]
        data = json.loads(line)
        assert "summary" not in data, "the run finished before it was killed"
        seen.append(data)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its DataLoader worker, mid-run
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    done_first = {r["image"] for r in seen if r["status"] == "ok"}
    assert 4 <= len(done_first) < ONE_FACE

    again = cli_process(*args)
    out, err = again.communicate(timeout=900)
    assert again.returncode == EXIT_BAD_INPUT, err  # the broken file
    rows, summary = json_lines(out)
    assert summary is not None and summary["photos"] == ALL_PHOTOS == len(rows)
    images = [r["image"] for r in rows]
    assert len(set(images)) == ALL_PHOTOS  # every photo accounted for, once
    status = {r["image"]: r["status"] for r in rows}
    assert all(status[image] == "duplicate" for image in done_first)  # reported done: kept, skipped
    enrolled = {i for i, s in status.items() if s in ("ok", "duplicate")}
    assert len(enrolled) == ONE_FACE
    assert summary["ok"] + summary["duplicate"] == ONE_FACE and summary["duplicate"] >= len(done_first)
    assert (summary["no_face"], summary["several_faces"], summary["error"]) == (1, len(LFW_SEVERAL), 1)
    with Gallery.open(gallery, read_only=True) as g:
        assert sum(g.template_counts().values()) == ONE_FACE  # no template twice
        for name in g.names():
            shas = [t.image_sha256 for t in g.show(name).templates]
            assert len(shas) == len(set(shas))
        assert g.image_hashes() == {(r["name"], r["sha256"]) for r in rows if r["image"] in enrolled}


def test_from_csv_reports_bad_rows_by_line_and_json_rows(tmp_path: Path, att_dir: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for s in (6, 7):
        shutil.copy(att_dir / f"s{s}" / "1.pgm", photos / f"s{s}.pgm")
    csv = tmp_path / "list.csv"
    csv.write_text("name,path\ns6,photos/s6.pgm\ns7;photos/s7.pgm\ns7,photos/s7.pgm\n", encoding="utf-8")
    gallery = tmp_path / "g"
    base = ["enroll", "--from-csv", str(csv), "--gallery", str(gallery), "--workers", "0"]
    result = runner.invoke(app, [*base, "--json"])
    assert result.exit_code == EXIT_USAGE, result.output  # the bad row is the worst
    rows, summary = json_lines(result.stdout)
    rows.sort(key=lambda r: r["line"])  # streamed as they are done: the bad row first
    assert [(r["line"], r["name"], r["status"]) for r in rows] == [
        (2, "s6", "ok"), (3, "s7;photos/s7.pgm", "error"), (4, "s7", "ok"),
    ]  # fmt: skip
    assert "list.csv:3: expected name,path, found 1 fields" in rows[1]["reason"]
    assert all(r["template_id"] is not None and r["found_by"] == "detector" for r in (rows[0], rows[2]))
    assert summary == {**summary, "photos": 3, "ok": 2, "error": 1, "identities": 2, "created": 2}
    # human output: the bad line on stderr, one summary line on stdout; a re-run skips what is done
    again = runner.invoke(app, [*base, "--quiet"])
    assert again.exit_code == EXIT_USAGE
    assert "list.csv:3: expected name,path" in again.stderr and "Traceback" not in again.output
    assert again.stdout.startswith("enrolled 0 photo(s) of 0 people (0 new); 2 already enrolled (skipped)")
    csv.write_text("s6,photos/s6.pgm\ns7,photos/s7.pgm\n", encoding="utf-8")
    assert runner.invoke(app, [*base, "--quiet"]).exit_code == EXIT_OK  # all done before: success


def test_refusals_come_before_any_work(tmp_path: Path) -> None:
    csv = tmp_path / "list.csv"
    csv.write_text("a,b.jpg\n", encoding="utf-8")
    gallery = tmp_path / "g"
    cases = [
        (["enroll", "alice", "--from-csv", str(csv)], "give no NAME or IMAGES"),
        (["enroll", "--from-csv", str(csv), "--new"], "--new and --add go with NAME"),
        (["enroll", "--from-csv", str(csv), "--workers", "-1"], "--workers -1 must be 0"),
        (["enroll", "--from-csv", str(csv), "--batch-size", "0"], "--batch-size 0 must be 1 or more"),
        (["enroll", "--from-csv", str(tmp_path / "none.csv")], "none.csv: no such file"),
        (["enroll", "alice"], "enroll needs NAME and IMAGES"),
        (["enroll", "alice", str(csv), "--workers", "2"], "--workers and --batch-size go with --from-csv"),
        (["enroll-dir", str(tmp_path / "nobody")], "nobody: not a directory"),
        (["enroll-dir", str(tmp_path), "--workers", "-2"], "--workers -2 must be 0"),
    ]
    for args, message in cases:
        result = runner.invoke(app, [*args, "--gallery", str(gallery)])
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not gallery.exists()  # nothing was opened, let alone created
