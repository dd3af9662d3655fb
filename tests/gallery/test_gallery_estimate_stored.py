"""The impostor estimate is part of the gallery's stored state (issue 24), on every backend.

Writes that enroll or remove templates renew it; a reader in another process (here: another
``Gallery`` object, which shares nothing in memory) takes the stored one without reading a vector,
and it equals what the templates give when computed from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facestyle.gallery import Gallery
from facestyle.gallery.adaptive import estimate
from facestyle.gallery.base import ESTIMATE_STALE_SHARE

MODEL = "test-model-estimate"
DIM = 8


def _people(n: int, per: int = 1, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        centre = rng.normal(size=DIM)
        for _ in range(per):
            v = centre + 0.3 * rng.normal(size=DIM)
            out.append((f"p{i:03d}", v / np.linalg.norm(v)))
    return out


def _exact(g: Gallery) -> np.ndarray:
    vecs, owners = g._labelled_vectors(None)
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.sort(estimate(vecs, owners).nearest)


def _stored(g: Gallery) -> dict:
    return json.loads(g._meta("impostor_estimate"))


def _reader_without_vectors(where: Path | str, monkeypatch: pytest.MonkeyPatch) -> Gallery:
    """A second gallery object that fails the test if it computes the estimate itself."""
    reader = Gallery.open(where, model=MODEL, dim=DIM, create=False, default_threshold=0.5)

    def no_vectors(*_a: object, **_k: object) -> None:
        raise AssertionError("the reader computed the estimate instead of reading the stored one")

    monkeypatch.setattr(reader, "_labelled_vectors", no_vectors)
    return reader


def test_writes_store_the_estimate_and_readers_use_it(where, monkeypatch: pytest.MonkeyPatch) -> None:
    with Gallery.open(where, model=MODEL, dim=DIM, default_threshold=0.5) as g:
        for name, v in _people(12):
            g.enroll(name, v)
        want = _exact(g)
        assert _stored(g)["templates"] == 12 and _stored(g)["identities"] == 12
        with _reader_without_vectors(where, monkeypatch) as reader:
            np.testing.assert_allclose(np.sort(reader.impostor_estimate().nearest), want, atol=1e-6)
            assert reader.threshold_info() == g.threshold_info()
        # A removal renews it: the nearest other identity of someone may have been the one removed.
        g.remove("p003")
        want = _exact(g)
        with _reader_without_vectors(where, monkeypatch) as reader:
            np.testing.assert_allclose(np.sort(reader.impostor_estimate().nearest), want, atol=1e-6)
        # A rename changes no score, and stores nothing new.
        before = g._meta("impostor_estimate")
        g.rename("p004", "renamed")
        assert g._meta("impostor_estimate") == before


def test_the_stored_estimate_stands_for_small_changes_only(where) -> None:
    people = _people(120, seed=1)
    with Gallery.open(where, model=MODEL, dim=DIM) as g:
        g.enroll_many([n for n, _ in people], np.stack([v for _, v in people]))
        made = _stored(g)
        assert made["templates"] == 120
        allowed = int(ESTIMATE_STALE_SHARE * 120)  # 1 change
        extra = _people(3, seed=2)
        for i in range(allowed):
            g.enroll(f"new{i}", extra[i][1])
        assert _stored(g) == made  # within the share: kept
        g.enroll("one-more", extra[allowed][1])
        renewed = _stored(g)
        assert renewed["templates"] == 120 + allowed + 1
        np.testing.assert_allclose(np.sort(renewed["nearest"]), _exact(g), atol=1e-6)


def test_a_gallery_without_a_stored_estimate_is_computed_by_readers(where) -> None:
    with Gallery.open(where, model=MODEL, dim=DIM) as g:
        for name, v in _people(8, seed=3):
            g.enroll(name, v)
        want = _exact(g)
        g._write_meta({"impostor_estimate": None})  # as a gallery from before estimates were stored
    with Gallery.open(where, model=MODEL, dim=DIM, create=False) as reader:
        assert reader._meta("impostor_estimate") is None
        np.testing.assert_allclose(np.sort(reader.impostor_estimate().nearest), want, atol=1e-6)


def test_a_damaged_stored_estimate_is_not_trusted(where) -> None:
    with Gallery.open(where, model=MODEL, dim=DIM) as g:
        for name, v in _people(8, seed=4):
            g.enroll(name, v)
        want = _exact(g)
        g._write_meta({"impostor_estimate": '{"nearest": [0.99], "templates": "x"}'})
    with Gallery.open(where, model=MODEL, dim=DIM, create=False) as reader:
        np.testing.assert_allclose(np.sort(reader.impostor_estimate().nearest), want, atol=1e-6)
