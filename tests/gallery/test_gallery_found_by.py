"""A gallery template records how its face was found (issue 20), and galleries made before that
(schema version 1) are read as they are and upgraded in place when opened for writing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from facestyle.gallery import Gallery
from facestyle.gallery.gallery import DB_NAME
from facestyle.gallery.store import SCHEMA_VERSION
from facestyle.io.images import load_image


def _tight_crop(photo: np.ndarray, marks: np.ndarray, k: float = 1.2) -> np.ndarray:
    lo, hi = marks.min(axis=0), marks.max(axis=0)
    c, s = (lo + hi) / 2, (hi - lo) * k
    x1, y1 = np.round(c - s / 2).astype(int)
    x2, y2 = np.round(c + s / 2).astype(int)
    return np.ascontiguousarray(photo[y1:y2, x1:x2])


def test_enrolling_a_tight_crop_records_found_by(tmp_path: Path, face_pipeline, att_dir: Path) -> None:
    """The k = 1.2 crop of AT&T s3/1 has no face for the detector; in auto (the pipeline's default) it
    is enrolled, the template says ``whole``, and identifying photo 5 of s3 finds it."""
    photo = load_image(att_dir / "s3" / "1.pgm")
    crop = _tight_crop(photo, face_pipeline.detect(photo)[0].landmarks)
    with Gallery.open(tmp_path / "g", pipeline=face_pipeline) as g:
        g.enroll_image("carol", crop)
        g.enroll_image("alice", att_dir / "s1" / "1.pgm")
        (tpl,) = g.show("carol").templates
        assert tpl.found_by == "whole" and tpl.to_dict()["found_by"] == "whole"
        assert g.show("alice").templates[0].found_by == "detector"
        # Photo 5 scores 0.917 against carol's crop (0.918 with the uncropped photo's own landmarks
        # moved onto the crop), alice 0.836.
        who = g.identify_image(att_dir / "s3" / "5.pgm", threshold=0.9)
        assert who.faces[0].identity == "carol"
        assert who.to_dict()["faces"][0]["found_by"] == "detector"


def _make_v1(gdir: Path) -> None:
    """Turn a gallery into what facestyle wrote before issue 20: no found_by column, schema 1."""
    conn = sqlite3.connect(gdir / DB_NAME)
    conn.execute("ALTER TABLE templates DROP COLUMN found_by")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()


def _schema(gdir: Path) -> tuple[str, set[str]]:
    conn = sqlite3.connect(gdir / DB_NAME)
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    columns = {row[1] for row in conn.execute("PRAGMA table_info(templates)")}
    conn.close()
    return version, columns


def test_a_version_1_gallery_is_read_and_upgraded(tmp_path: Path) -> None:
    gdir = tmp_path / "old"
    vec = np.ones(4, np.float32) / 2
    with Gallery.open(gdir, model="m", dim=4) as g:
        g.enroll("ann", vec, detector="mtcnn")
    _make_v1(gdir)
    assert _schema(gdir) == ("1", {"id", "identity_id", "embedding", "image_sha256", "source", "detector",
                                   "box", "created_at"})  # fmt: skip

    with Gallery.open(gdir, read_only=True) as g:  # read as it is: nothing written
        assert g.show("ann").templates[0].found_by is None
        assert g.search(vec[None], top_k=1)[0][0].name == "ann"
    assert _schema(gdir)[0] == "1"

    with Gallery.open(gdir) as g:  # opened for writing: upgraded, old templates keep found_by None
        g.enroll("bob", -vec, detector="mtcnn", found_by="whole")
        assert g.show("ann").templates[0].found_by is None
        assert g.show("bob").templates[0].found_by == "whole"
    version, columns = _schema(gdir)
    assert version == str(SCHEMA_VERSION) == "2" and "found_by" in columns
