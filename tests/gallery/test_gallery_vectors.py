"""The vector layer of the gallery with hand-made and synthetic vectors (no models, fast)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from facestyle.errors import GalleryError, UsageError
from facestyle.gallery import Gallery, check_name
from facestyle.gallery.gallery import INDEX_NAME, resolve_gallery_path

MODEL = "test-model"


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def random_units(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, dim)))


@pytest.fixture()
def gdir(tmp_path: Path) -> Path:
    return tmp_path / "gallery"


def test_hand_computed_scores_and_best_template(where: Path | str) -> None:
    with Gallery.open(where, model=MODEL, dim=4) as g:
        g.enroll("ann", [1, 0, 0, 0])
        g.enroll("ann", [0, 0, 1, 0])  # a second template
        g.enroll("bob", [0, 1, 0, 0])
        # cos with ann's templates: 0.6 and 0; with bob: 0.8
        assert g.verify("ann", [0.6, 0.8, 0, 0]) == pytest.approx(0.6, abs=1e-6)
        assert g.verify("bob", [0.6, 0.8, 0, 0]) == pytest.approx(0.8, abs=1e-6)
        # ann is scored by her best template (0.8 via [0,0,1,0]); bob gets 0
        [cands] = g.search(unit([0, 0, 0.8, 0.6]), top_k=2)
        assert [c.name for c in cands] == ["ann", "bob"]
        assert cands[0].score == pytest.approx(0.8, abs=1e-6)
        assert cands[1].score == pytest.approx(0.0, abs=1e-6)
        # unnormalised queries are normalised: [3,4,0,0] is [0.6,0.8,0,0]
        [m] = g.identify(np.array([[3.0, 4.0, 0, 0]]), top_k=2, threshold=0.7)
        assert m.identity == "bob" and m.score == pytest.approx(0.8, abs=1e-6)
        [m] = g.identify(np.array([[3.0, 4.0, 0, 0]]), top_k=2, threshold=0.81)
        assert m.identity is None and m.score == pytest.approx(0.8, abs=1e-6)
        assert [c.name for c in m.candidates] == ["bob", "ann"]
        assert g.template_counts() == {"ann": 2, "bob": 1}


def test_identify_matches_brute_force(where: Path | str) -> None:
    x = random_units(300, 32, seed=1)
    owners = np.arange(300) % 100  # 100 names, 3 templates each
    q = random_units(50, 32, seed=2)
    with Gallery.open(where, model=MODEL, dim=32, autosave=False) as g:
        for name_id in range(100):
            g.enroll(f"n{name_id}", x[owners == name_id])
        got = g.search(q, top_k=5)
    sims = q @ x.T
    for row, cands in zip(sims, got, strict=True):
        best = {n: row[owners == n].max() for n in range(100)}
        expect = sorted(best, key=lambda n: -best[n])[:5]
        assert [c.name for c in cands] == [f"n{n}" for n in expect]
        assert [c.score for c in cands] == pytest.approx([best[n] for n in expect], abs=1e-5)


def test_remove_rename_reopen(where: Path | str) -> None:
    x = random_units(6, seed=3)
    with Gallery.open(where, model=MODEL, dim=16) as g:
        for i in range(6):
            g.enroll(f"p{i}", x[i])
        assert g.remove("p2") == 1
        g.rename("p3", "Zoë")
        with pytest.raises(GalleryError, match="not enrolled"):
            g.remove("p2")
        with pytest.raises(GalleryError, match="already enrolled"):
            g.rename("p4", "Zoë")
        with pytest.raises(GalleryError, match="not enrolled"):
            g.verify("p2", x[2])
    with Gallery.open(where) as g:
        assert g.names() == ["Zoë", "p0", "p1", "p4", "p5"]
        assert g.model == MODEL and g.dim == 16
        [m2, m3] = g.identify(x[[2, 3]], top_k=3, threshold=0.99)
        assert m2.identity is None and "p2" not in [c.name for c in m2.candidates]
        assert m3.identity == "Zoë" and m3.score == pytest.approx(1.0, abs=1e-5)
        stats = g.stats()
        assert stats["templates"] == 5 and stats.get("index_vectors", 5) == 5


def test_duplicate_image_is_not_added_twice(where: Path | str) -> None:
    with Gallery.open(where, model=MODEL, dim=4) as g:
        first = g.enroll("ann", [1, 0, 0, 0], image_sha256="abc")
        again = g.enroll("ann", [1, 0, 0, 0], image_sha256="abc")
        other = g.enroll("bob", [1, 0, 0, 0], image_sha256="abc")  # same photo, another person: kept
        assert first.created and len(first.template_ids) == 1
        assert again.duplicate and again.template_ids == ()
        assert other.created and g.template_counts() == {"ann": 1, "bob": 1}
        g.enroll("ann", [0, 1, 0, 0])  # no photo hash: not listed
        assert g.image_hashes() == {("ann", "abc"), ("bob", "abc")}


def test_names_are_data_never_paths(where: Path | str, tmp_path: Path) -> None:
    hostile = [
        "../../evil",
        "/etc/passwd",
        "a/b",
        "..",
        "NUL",
        "名前 with spaces",
        "x" * 200,
        "'; DROP TABLE x; --",
    ]
    with Gallery.open(where, model=MODEL, dim=4) as g:
        for i, name in enumerate(hostile):
            g.enroll(name, np.eye(4)[i % 4])
        assert sorted(g.names()) == sorted(hostile)
    if isinstance(where, Path):
        assert {p.name for p in where.iterdir()} <= {
            "gallery.sqlite", "gallery.sqlite-wal", "gallery.sqlite-shm", "index.faiss", "lock"
        }  # fmt: skip
    assert not (tmp_path / "evil").exists()
    for bad in ["", "   ", "tab\there", "new\nline", "x" * 201]:
        with pytest.raises(UsageError):
            check_name(bad)


def test_files_are_private(gdir: Path) -> None:
    old = os.umask(0o022)
    try:
        with Gallery.open(gdir, model=MODEL, dim=4) as g:
            g.enroll("ann", [1, 0, 0, 0])
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in gdir.iterdir()}
    finally:
        os.umask(old)
    assert stat.S_IMODE(gdir.stat().st_mode) == 0o700
    assert "gallery.sqlite" in modes and INDEX_NAME in modes
    assert all(mode == 0o600 for mode in modes.values()), modes


def test_model_mismatch_is_refused(where: Path | str) -> None:
    with Gallery.open(where, model=MODEL, dim=4, model_version="w1") as g:
        g.enroll("ann", [1, 0, 0, 0])
    with pytest.raises(GalleryError, match="holds embeddings of model 'test-model', not 'other'"):
        Gallery.open(where, model="other", dim=4)
    with pytest.raises(GalleryError, match="4-d embeddings, not 8-d"):
        Gallery.open(where, model=MODEL, dim=8)
    with pytest.raises(GalleryError, match="weights w1"):
        Gallery.open(where, model=MODEL, dim=4, model_version="w2")
    with Gallery.open(where) as g, pytest.raises(GalleryError, match="8 dimensions; this gallery holds 4"):
        g.search(np.ones(8))


def test_missing_gallery_and_bad_input(tmp_path: Path) -> None:
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery.open(tmp_path / "nope", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(GalleryError, match="not a directory"):
        Gallery.open(tmp_path / "file")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "gallery.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a readable gallery database"):
        Gallery.open(tmp_path / "junk")
    with Gallery.open(tmp_path / "g", model=MODEL, dim=4) as g:
        for bad in ([0, 0, 0, 0], [np.nan, 1, 0, 0]):
            with pytest.raises(UsageError):
                g.enroll("ann", bad)
        with pytest.raises(UsageError, match="no threshold"):
            g.identify(np.ones(4))  # the test model has no default threshold and none is stored
        assert g.search(np.ones(4)) == [[]]  # empty gallery: no candidates


def test_threshold_is_stored_in_the_gallery(where: Path | str) -> None:
    with Gallery.open(where, model=MODEL, dim=4, default_threshold=0.5) as g:
        assert g.threshold == 0.5
        g.set_threshold(0.42, source="calibrate on LFW view 1")
    with Gallery.open(where) as g:
        assert g.threshold == pytest.approx(0.42)
        assert g.stats()["threshold_source"] == "calibrate on LFW view 1"
        g.set_threshold(None)
        assert g.threshold is None
        with pytest.raises(UsageError):
            g.set_threshold(1.5)


def test_gallery_path_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FACESTYLE_GALLERY", raising=False)
    assert resolve_gallery_path() == Path("gallery")
    monkeypatch.setenv("FACESTYLE_GALLERY", str(tmp_path / "env"))
    assert resolve_gallery_path() == tmp_path / "env"
    assert resolve_gallery_path(tmp_path / "arg") == tmp_path / "arg"
    url = "postgresql:///db?gallery=staff"  # a URL stays as given (a Path would fold its slashes)
    assert resolve_gallery_path(url) == url
    monkeypatch.setenv("FACESTYLE_GALLERY", url)
    assert resolve_gallery_path() == url


@pytest.mark.parametrize(
    "damage",
    ["truncate", "flip", "garbage", "foreign", "stale"],
)
def test_bad_index_file_is_detected_and_rebuilt(gdir: Path, tmp_path: Path, damage: str) -> None:
    x = random_units(20, seed=4)
    with Gallery.open(gdir, model=MODEL, dim=16) as g:
        for i in range(10):
            g.enroll(f"p{i}", x[i])
    index_file = gdir / INDEX_NAME
    if damage == "truncate":
        data = index_file.read_bytes()
        index_file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data = bytearray(index_file.read_bytes())
        data[-100] ^= 0xFF
        index_file.write_bytes(bytes(data))
    elif damage == "garbage":
        index_file.write_bytes(os.urandom(5000))
    elif damage == "foreign":  # a valid index file from another gallery with the same model
        with Gallery.open(tmp_path / "other", model=MODEL, dim=16) as other:
            other.enroll("intruder", x[0])
        index_file.write_bytes((tmp_path / "other" / INDEX_NAME).read_bytes())
    elif damage == "stale":  # an older file: more enrollments happened after it was written
        old = index_file.read_bytes()
        with Gallery.open(gdir) as g:
            for i in range(10, 20):
                g.enroll(f"p{i}", x[i])
        index_file.write_bytes(old)
    notes: list[str] = []
    with Gallery.open(gdir, on_note=notes.append) as g:
        n = 20 if damage == "stale" else 10
        matches = g.identify(x[:n], top_k=1, threshold=0.99)
        assert [m.identity for m in matches] == [f"p{i}" for i in range(n)]
    if damage == "stale":
        assert notes == []  # caught up from SQLite, nothing to complain about
    else:
        assert len(notes) == 1 and "rebuilding the index from the database" in notes[0]
        with Gallery.open(gdir, on_note=notes.append):  # the rebuilt file was written: no second note
            pass
        assert len(notes) == 1


def test_concurrent_threads_read_while_one_writes(where: Path | str) -> None:
    x = random_units(200, 32, seed=6)
    errors: list[BaseException] = []
    with Gallery.open(where, model=MODEL, dim=32, autosave=False) as g:
        for i in range(100):
            g.enroll(f"p{i}", x[i])

        def reader(offset: int) -> None:
            try:
                for _ in range(30):
                    idx = np.arange(offset, offset + 10)
                    matches = g.identify(x[idx], top_k=2, threshold=0.99)
                    assert [m.identity for m in matches] == [f"p{i}" for i in idx]
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def writer() -> None:
            try:
                for i in range(100, 200):
                    g.enroll(f"p{i}", x[i])
            except BaseException as exc:  # pragma: no cover
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(k * 10,)) for k in range(6)]
        threads.append(threading.Thread(target=writer))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(g) == 200
        matches = g.identify(x, top_k=1, threshold=0.99)
        assert [m.identity for m in matches] == [f"p{i}" for i in range(200)]


def test_long_lived_reader_sees_other_writers(where: Path | str) -> None:
    """A second handle (as another process would) enrolls, renames and removes; the first one follows."""
    x = random_units(8, seed=7)
    with Gallery.open(where, model=MODEL, dim=16) as reader, Gallery.open(where) as writer:
        writer.enroll("a", x[0])
        assert [c.name for c in reader.search(x[0], top_k=1)[0]] == ["a"]  # appended
        writer.enroll("a", x[1])
        writer.enroll("b", x[2])
        assert [c.name for c in reader.search(x[2], top_k=1)[0]] == ["b"]
        assert reader.search(x[1], top_k=1)[0][0].score == pytest.approx(1.0, abs=1e-5)
        writer.rename("b", "c")
        writer.remove("a")
        [cands] = reader.search(x[2], top_k=5)
        assert [c.name for c in cands] == ["c"]  # renamed, and "a" is gone
        writer.enroll("a", x[3])
        assert reader.search(x[3], top_k=1)[0][0].name == "a"
        assert reader.stats()["templates"] == 2


def test_enroll_many_is_one_transaction(where: Path | str) -> None:
    x = random_units(30, seed=8)
    names = [f"p{i % 10}" for i in range(30)]  # 10 people, 3 templates each
    with Gallery.open(where, model=MODEL, dim=16) as g:
        gen = g.stats()["generation"]
        assert g.enroll_many(names, x) == 30
        # one write for the 30 templates, then one for the impostor estimate they renew
        assert g.stats()["generation"] == gen + 2
        assert g.template_counts() == {f"p{i}": 3 for i in range(10)}
        with pytest.raises(UsageError):
            g.enroll_many(["ok", "bad\nname"], x[:2])  # refused before anything is written
        assert len(g) == 10
        found = [m.identity for m in g.identify(x, top_k=1, threshold=0.99)]
        assert found == names
