"""A gallery on read-only storage answers every read and refuses every write in one line; a rebuild
never makes a reader see a missing index.

Read-only storage is a read-only bind mount when the test runs as root (as CI does), else the
directory's write permission removed; the test says which one ran (``-rs`` shows nothing skipped).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from enroll_worker import DIM, MODEL, vector_for
from read_only import read_only_view
from typer.testing import CliRunner

from facestyle.cli import app
from facestyle.errors import EXIT_GALLERY, EXIT_OK, GalleryError
from facestyle.gallery import Gallery

runner = CliRunner()


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


@pytest.fixture
def read_only_gallery(tmp_path: Path, att_dir: Path):
    """(read-only view of a two-person gallery, how it was made read-only)."""
    source = tmp_path / "gallery"
    for name, photo in (("s1", att_dir / "s1" / "1.pgm"), ("s2", att_dir / "s2" / "1.pgm")):
        result = runner.invoke(app, ["enroll", name, str(photo), "--gallery", str(source)])
        assert result.exit_code == 0, result.output
    with read_only_view(source) as (view, how):
        yield view, how


def test_every_read_works_and_every_write_is_one_line(read_only_gallery, att_dir: Path) -> None:
    view, _how = read_only_gallery
    before = _digests(view)
    g = ["--gallery", str(view)]
    reads = {
        "list": ["gallery", "list", *g, "--json"],
        "show": ["gallery", "show", "s1", *g, "--json"],
        "stats": ["gallery", "stats", *g, "--json"],
        "identify": ["identify", str(att_dir / "s1" / "5.pgm"), *g, "--threshold", "0.92", "--json"],
        "verify": ["verify", "s1", str(att_dir / "s1" / "5.pgm"), *g, "--json"],
    }
    for label, args in reads.items():
        result = runner.invoke(app, args)
        assert result.exit_code == EXIT_OK, (label, result.output)
    writes = {
        "enroll": ["enroll", "s3", str(att_dir / "s3" / "1.pgm"), *g],
        "remove": ["gallery", "remove", "s1", *g],
        "rename": ["gallery", "rename", "s1", "x", *g],
        "rebuild": ["gallery", "rebuild", *g],
    }
    for label, args in writes.items():
        result = runner.invoke(app, args)
        assert result.exit_code == EXIT_GALLERY, (label, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "read-only gallery" in lines[0] and "Traceback" not in result.output
    assert _digests(view) == before  # nothing written, nothing left behind
    with Gallery.open(view, read_only=True) as gallery:  # and from Python
        assert sorted(gallery.names()) == ["s1", "s2"]
        with pytest.raises(GalleryError, match="read-only gallery"):
            gallery.remove("s1")


def test_a_rebuild_never_shows_readers_a_missing_index(tmp_path: Path) -> None:
    """`gallery rebuild` used to delete the index before writing the new one: readers opening the
    gallery meanwhile rebuilt it themselves and said "no index file". Now it is replaced by a rename."""
    path = tmp_path / "gallery"
    with Gallery.open(path, model=MODEL, dim=DIM) as gallery:
        gallery.enroll_many(
            [f"p{i}" for i in range(200)], np.stack([vector_for(f"p{i}") for i in range(200)])
        )
    notes: list[str] = []
    stop = threading.Event()

    def rebuild_forever() -> None:
        with Gallery.open(path, model=MODEL, dim=DIM) as writer:
            while not stop.is_set():
                writer.rebuild()

    worker = threading.Thread(target=rebuild_forever)
    worker.start()
    try:
        for _ in range(60):
            with Gallery.open(path, read_only=True, on_note=notes.append) as reader:
                assert reader.search(vector_for("p7"), top_k=1)[0][0].name == "p7"
    finally:
        stop.set()
        worker.join()
    assert notes == [], notes


def test_read_only_needs_no_write_access_even_from_python(tmp_path: Path) -> None:
    """A reader opened read-only takes no lock and changes no file of the gallery. (On writable
    storage SQLite may create its empty ``-wal``/``-shm`` bookkeeping files for a WAL reader; they
    hold no data.)"""
    path = tmp_path / "gallery"
    with Gallery.open(path, model=MODEL, dim=DIM) as gallery:
        gallery.enroll("a", vector_for("a"))
    before = _digests(path)
    code = (
        "from facestyle.gallery import Gallery\n"
        f"g = Gallery.open({str(path)!r}, read_only=True)\n"
        "print(g.names()); g.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and "['a']" in done.stdout, done.stderr
    after = _digests(path)
    assert {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))} == before
    assert (path / "gallery.sqlite-wal").stat().st_size == 0 if "gallery.sqlite-wal" in after else True
