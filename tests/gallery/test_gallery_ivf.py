"""The IVF-PQ layout of large galleries, with the switch size lowered so a few thousand vectors suffice."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from facestyle.gallery import Gallery
from facestyle.gallery import index as index_mod
from facestyle.gallery.index import VectorIndex, choose_kind, nlist_for, nprobe_for

MODEL = "test-model"
DIM = 128
N = 2400


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def genuine_probes(
    x: np.ndarray, n: int, cos: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Gallery rows mixed with orthogonal noise to cosine ``cos`` (as in benchmarks/gallery_search.py)."""
    src = rng.choice(len(x), n, replace=False)
    noise = unit(rng.standard_normal((n, x.shape[1])))
    noise = unit(noise - (noise * x[src]).sum(1, keepdims=True) * x[src])
    return src, unit(cos * x[src] + np.sqrt(1 - cos**2) * noise)


def test_list_count_and_probe_policy() -> None:
    # power of two nearest 4*sqrt(n), capped so k-means gets >= 39 training vectors per list
    assert nlist_for(1_000_000) == 4096  # 4*1000 = 4000
    assert nlist_for(100_000) == 1024  # 4*316 = 1265
    assert nlist_for(30_000) == 512  # 4*173 = 693 -> 2**9.44 -> 512; cap 769 -> 512
    assert nlist_for(2400) == 32  # 4*49 = 196 -> 256, but 2400 // 39 = 61 -> 32
    for nlist in (32, 512, 1024, 4096):
        assert 1 <= nprobe_for(nlist) <= nlist
    # hysteresis: IVF from the switch size, back to flat only below half of it
    s = index_mod.IVF_MIN_TEMPLATES
    assert choose_kind(s - 1) == "flat" and choose_kind(s) == "ivfpq"
    assert choose_kind(s // 2, "ivfpq") == "ivfpq" and choose_kind(s // 2 - 1, "ivfpq") == "flat"


def test_ivf_gallery_recall_remove_rename_reopen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "IVF_MIN_TEMPLATES", 2000)
    monkeypatch.setattr(index_mod, "FLAT_MAX_AFTER_IVF", 1000)
    rng = np.random.default_rng(7)
    x = unit(rng.standard_normal((N, DIM)))
    names = [f"p{i}" for i in range(N)]
    gdir = tmp_path / "gallery"
    src, probes = genuine_probes(x, 300, 0.85, rng)

    def recall(g: Gallery, expect: list[str]) -> float:
        got = [c[0].name for c in g.search(probes, top_k=1)]
        return float(np.mean([a == b for a, b in zip(got, expect, strict=True)]))

    with Gallery.open(gdir, model=MODEL, dim=DIM) as g:
        g.enroll_many(names, x)
        stats = g.stats()
        assert stats["index_kind"] == "ivfpq" and stats["index_vectors"] == N
        ivf = g._index.index  # the real FAISS object: approximate, not a flat index in disguise
        assert isinstance(ivf, faiss.IndexIVFPQFastScan)
        assert ivf.nlist == nlist_for(N) == 32 and nprobe_for(ivf.nlist) < ivf.nlist
        exact = [names[i] for i in np.argmax(probes @ x.T, axis=1)]
        assert np.mean(np.array(exact) == np.array(names)[src]) > 0.99  # probes are genuine
        assert recall(g, exact) >= 0.99
        # The coarse stage's PQ scores are approximate; what the gallery reports is re-scored exactly.
        params = faiss.SearchParametersIVF(nprobe=nprobe_for(ivf.nlist))
        pq_scores, pq_ids = ivf.search(probes[:50], 1, params=params)
        true = np.array([probes[i] @ g._index.reconstruct(t) for i, t in enumerate(pq_ids[:, 0])])
        assert np.max(np.abs(pq_scores[:, 0] - true)) > 1e-3  # the approximation is real...
        scores, ids = g._index.search(probes[:50], 5)
        stored = np.array([[g._index.reconstruct(t) for t in row] for row in ids])
        exact_scores = np.einsum("qkd,qd->qk", stored, probes[:50])
        assert np.allclose(scores, exact_scores, atol=1e-5)  # ...the reported scores are exact...
        assert np.all(np.diff(scores, axis=1) <= 0)  # ...and ordered by them

        gone = [f"p{i}" for i in src[:30]]
        for name in gone:
            assert g.remove(name) == 1
        assert g.stats()["index_vectors"] == N - 30  # removed for real, no tombstones
        keep = np.ones(N, bool)
        keep[src[:30]] = False
        exact = [names[i] for i in np.flatnonzero(keep)[np.argmax(probes @ x[keep].T, axis=1)]]
        hits = {c.name for cands in g.search(probes[:30], top_k=5) for c in cands}
        assert hits.isdisjoint(gone)
        assert recall(g, exact) >= 0.99

        g.rename(f"p{src[40]}", "renamed")
        exact = ["renamed" if e == f"p{src[40]}" else e for e in exact]
        [m] = g.identify(probes[40:41], top_k=1, threshold=0.5)
        assert m.identity == "renamed" and m.score == pytest.approx(0.85, abs=1e-4)

    def no_rebuild(*args: object, **kwargs: object) -> VectorIndex:
        raise AssertionError("the index was rebuilt instead of loaded")

    monkeypatch.setattr(VectorIndex, "build", no_rebuild)
    notes: list[str] = []
    with Gallery.open(gdir, on_note=notes.append) as g:
        assert recall(g, exact) >= 0.99
        stats = g.stats()
        assert notes == [] and stats["index_kind"] == "ivfpq" and stats["index_vectors"] == N - 30
        assert g.identify(probes[40:41], top_k=1, threshold=0.5)[0].identity == "renamed"


def test_ivf_retrains_after_growth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists trained for a small gallery are retrained once it has grown IVF_RETRAIN_GROWTH times."""
    monkeypatch.setattr(index_mod, "IVF_MIN_TEMPLATES", 500)
    monkeypatch.setattr(index_mod, "FLAT_MAX_AFTER_IVF", 250)
    x = unit(np.random.default_rng(3).standard_normal((2100, 32)))
    with Gallery.open(tmp_path / "g", model=MODEL, dim=32) as g:
        g.enroll_many([f"a{i}" for i in range(500)], x[:500])
        assert g._index.kind == "ivfpq" and g._index.trained_on == 500
        g.enroll_many([f"b{i}" for i in range(1500)], x[500:2000])  # 2000 = 4 x 500: not yet
        assert g._index.trained_on == 500 and g._index.ntotal == 2000
        g.enroll_many([f"c{i}" for i in range(100)], x[2000:])
        assert g._index.trained_on == 2100 and g._index.ntotal == 2100
        assert g._index.index.nlist == nlist_for(2100) > nlist_for(500)
        [m] = g.identify(x[2050:2051], top_k=1, threshold=0.99)
        assert m.identity == "c50"
