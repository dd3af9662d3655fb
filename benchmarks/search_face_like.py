"""Is random data the worst case for approximate search? Recall@1 of an HNSW graph (pgvector's
structure) and of the directory gallery's IVF-PQ index on face-like and on random vectors, side by side
in one run.

The PostgreSQL gallery's search benchmark (``benchmarks/gallery_search.py``) uses random unit vectors,
for which no real faces are needed at a million templates. This script asks whether real face
embeddings would make graph search easier (lower intrinsic dimension) or harder (a crowded space).

Face-like vectors come from a Gaussian model of real dlib-resnet-v1 embeddings of LFW View 1 (people
with 2+ photos): identity centres are drawn from the between-identity covariance, a template or a
probe is its centre plus a draw from the within-identity covariance, then normalised. The gallery
holds one template per synthetic identity, and a probe is a new draw of an enrolled identity (a second
photo of an enrolled person). Random vectors are uniform on the sphere, with probes mixed to cosine
0.85 with a gallery vector, as in ``gallery_search.py``. The graph is FAISS's ``IndexHNSWFlat`` with
pgvector's construction (inner product, ``m`` links, ``ef_construction``); recall@1 is against exact
search over the same vectors. The ``gallery ...`` rows are the directory backend's own index
(:class:`facestyle.gallery.index.VectorIndex`, its list count, nprobe and exact re-scoring) as the
gallery builds it at that size. ``own top-1`` is how often exact search itself puts the probe's identity
first: below 1, the space is crowded, and the exact top-1 is often a near-tie of two strangers that
a graph search may swap without changing any answer. ``kept`` is the share of those right exact
answers (own identity first) that the graph search also gets right: the recall that identify feels.

    python benchmarks/search_face_like.py --embeddings /tmp/open_set.npz   # file from benchmarks/open_set.py
    python benchmarks/search_face_like.py --sizes 100000,200000 --ef 20,40,80,160

Without ``--embeddings`` (or with a path that does not exist yet) LFW View 1 is embedded first (a few
minutes) and, given a path, saved there in ``open_set.py``'s format.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"
PREFIX = "LFW View 1|people|"
RANDOM_PROBE_COS = 0.85


def lfw_people(path: Path | None) -> list[np.ndarray]:
    """Per person with 2+ photos, their (k, 128) unit embeddings."""
    if path is not None and path.exists():
        with np.load(path) as z:
            return [z[k] for k in z.files if k.startswith(PREFIX) and len(z[k]) >= 2]
    from facestyle.api import FacePipeline

    root = DATA / "lfw-view1" / "images"
    folders = {p.name: sorted(p.glob("*.jpg")) for p in sorted(root.iterdir()) if p.is_dir()}
    folders = {k: v for k, v in folders.items() if len(v) >= 2}
    paths = [p for files in folders.values() for p in files]
    table = FacePipeline().features(face="largest").embed(paths)
    found = {str(p): v for p, v, ok in zip(paths, table.values, table.ok, strict=True) if ok}
    people = {}
    for name, files in folders.items():
        vecs = [found[str(p)] for p in files if str(p) in found]
        if len(vecs) >= 2:
            people[PREFIX + name] = np.stack(vecs).astype(np.float32)
    if path is not None:
        np.savez(path, **people)
    return list(people.values())


def gaussian_model(people: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, between-identity and within-identity square-root covariances of the embeddings."""
    means = np.stack([g.mean(0) for g in people])
    deviations = np.concatenate([g - g.mean(0) for g in people])
    within = deviations.T @ deviations / (len(deviations) - len(people))
    # the spread of a person's mean photo includes within-identity noise over their photo count
    between = np.cov(means.T) - within * np.mean([1 / len(g) for g in people])
    return means.mean(0), _sqrt_psd(between), _sqrt_psd(within)


def _sqrt_psd(cov: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(cov)
    return v * np.sqrt(np.clip(w, 0, None))


def effective_dim(root: np.ndarray) -> float:
    """Participation ratio of the covariance ``root @ root.T``: how many directions carry its variance."""
    w = np.linalg.svd(root, compute_uv=False) ** 2
    return float(w.sum() ** 2 / (w**2).sum())


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def face_like(
    n: int, queries: int, model, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, between, within = model
    dim = len(mean)
    centres = mean + rng.standard_normal((n, dim)).astype(np.float32) @ between.T
    gallery = unit(centres + rng.standard_normal((n, dim)).astype(np.float32) @ within.T)
    own = rng.choice(n, queries, replace=False)
    probes = unit(centres[own] + rng.standard_normal((queries, dim)).astype(np.float32) @ within.T)
    return gallery, probes, own


def random_set(n: int, queries: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    gallery = unit(rng.standard_normal((n, dim)))
    own = rng.choice(n, queries, replace=False)
    noise = unit(rng.standard_normal((queries, dim)))
    noise = unit(noise - (noise * gallery[own]).sum(1, keepdims=True) * gallery[own])  # orthogonal
    s = np.sqrt(1 - RANDOM_PROBE_COS**2)
    return gallery, unit(RANDOM_PROBE_COS * gallery[own] + s * noise), own


def real_split(people: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Real LFW: each person's first photo is a probe, every other photo a gallery template.
    Returns the gallery, the probes, each probe's person and each template's person."""
    gallery, probes, owners = [], [], []
    for person, photos in enumerate(people):
        probes.append(photos[0])
        gallery.extend(photos[1:])
        owners.extend([person] * (len(photos) - 1))
    people_ids = np.arange(len(people))
    return (
        np.stack(gallery).astype(np.float32),
        np.stack(probes).astype(np.float32),
        people_ids,
        np.array(owners),
    )


def pq_rescored_top1(gallery: np.ndarray, probes: np.ndarray, k: int) -> np.ndarray:
    """Top-1 after the gallery's product quantiser (its codes, one list scanned whole) hands ``k``
    candidates to exact re-scoring: the code part of the gallery's IVF layout without the lists."""
    import faiss

    from facestyle.gallery.index import PQ_BITS, pq_subquantizers

    dim = gallery.shape[1]
    pq = faiss.IndexIVFPQFastScan(
        faiss.IndexFlatIP(dim), dim, 1, pq_subquantizers(dim), PQ_BITS, faiss.METRIC_INNER_PRODUCT
    )
    pq.train(gallery)
    pq.add(gallery)
    _, cand = pq.search(probes, k)
    scores = np.einsum("qkd,qd->qk", gallery[cand], probes)
    return cand[np.arange(len(cand)), scores.argmax(1)]


def model_check(people: list[np.ndarray], model, seed: int) -> None:
    """The Gaussian model against the real embeddings it was fitted on, at the real set's size: does
    it crowd the space as real faces do, and does it strain the product quantiser alike?"""
    real = real_split(people)
    n, queries = len(real[0]), len(real[1])
    made = face_like(n, queries, model, np.random.default_rng(seed))
    made = (*made, np.arange(n))  # one template per synthetic identity
    print(f"\nThe model against real LFW View 1 ({n} templates, {queries} probes): PQ codes re-scored")
    print(
        "| data | probe cos to own best (p50) | own top-1 (exact) | recall@1, 32 re-scored | 128 re-scored |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, (gallery, probes, own, owners) in (("real LFW View 1", real), ("face-like", made)):
        scores = probes @ gallery.T
        truth = scores.argmax(1)
        own_best = np.where(owners[None, :] == own[:, None], scores, -np.inf).max(1)
        cells = [f"{(pq_rescored_top1(gallery, probes, k) == truth).mean():.3f}" for k in (32, 128)]
        print(
            f"| {name} | {np.median(own_best):.3f} | {(owners[truth] == own).mean():.3f} | "
            + " | ".join(cells)
            + " |"
        )
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embeddings", type=Path, help="npz from benchmarks/open_set.py (made if missing)")
    ap.add_argument("--sizes", default="100000,200000")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--ef", default="20,40,80,160", help="ef_search values")
    ap.add_argument("--m", type=int, default=24, help="HNSW links per node (the gallery's HNSW_M)")
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--postgres",
        action="store_true",
        help="also the PostgreSQL gallery's Gallery.search (pgvector HNSW) on a private pgserver",
    )
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    people = lfw_people(args.embeddings)
    model = gaussian_model(people)
    print(
        f"# {len(people)} LFW View 1 people with 2+ photos; effective dimensions: between-identity "
        f"{effective_dim(model[1]):.1f}, within {effective_dim(model[2]):.1f} (random: 128); "
        f"HNSW m={args.m} ef_construction={args.ef_construction}; {args.threads} thread(s); "
        "load {:.2f}/{:.2f}/{:.2f}".format(*os.getloadavg())
    )
    model_check(people, model, args.seed)
    print(
        "| data | N | probe cos to own template (p50) | own top-1 (exact) | search | recall@1 "
        "| kept | ms/query (p50 for postgres) | build s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    pg = start_postgres() if args.postgres else None
    try:
        for n in (int(s) for s in args.sizes.split(",")):
            compare(n, model, args, pg)
    finally:
        if pg is not None:
            pg.close()


def start_postgres():
    """gallery_search.py's private pgserver (PostgreSQL 16 + pgvector 0.6.2, unix socket, temp dir)."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gallery_search import PgBench

    return PgBench(tempfile.gettempdir(), shared_buffers="2GB")


def postgres_rows(pg, name: str, gallery: np.ndarray, probes: np.ndarray, args) -> list[tuple]:
    """``Gallery.search`` on a PostgreSQL gallery of ``gallery`` (HNSW m, ef_construction as the
    backend's constants), per ef_search: the rows of the table."""
    from gallery_search import time_pg_gallery_search

    from facestyle.gallery import postgres

    table, _, _, _ = pg.load(name, gallery)
    build, _, _ = pg.build_index(table, postgres.HNSW_M, postgres.HNSW_EF_CONSTRUCTION, "1GB", 1)
    pg.warm(table)
    rows = []
    for ef in (int(e) for e in args.ef.split(",")):
        lat, top = time_pg_gallery_search(pg.gallery_url(name), probes, ef, 1)
        label = f"postgres Gallery.search m={postgres.HNSW_M} ef_search {ef}"
        rows.append((label, build, top[:, None], 1000 * float(np.median(lat))))
    return rows


def compare(n: int, model, args, pg) -> None:
    """The table's rows for galleries of ``n`` templates, face-like and random."""
    import faiss

    from facestyle.gallery.index import VectorIndex, choose_kind

    rng = np.random.default_rng(args.seed)
    sets = {
        "face-like": face_like(n, args.queries, model, rng),
        "random": random_set(n, args.queries, len(model[0]), rng),
    }
    for name, (gallery, probes, own) in sets.items():
        exact = faiss.IndexFlatIP(gallery.shape[1])
        exact.add(gallery)
        _, truth = exact.search(probes, 1)
        cos = float(np.median((probes * gallery[own]).sum(1)))
        graph = faiss.IndexHNSWFlat(gallery.shape[1], args.m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = args.ef_construction
        t0 = time.perf_counter()
        graph.add(gallery)
        build = time.perf_counter() - t0
        rows = []
        for ef in (int(e) for e in args.ef.split(",")):
            graph.hnsw.efSearch = ef
            rows.append((f"hnsw ef_search {ef}", build, *timed(graph.search, probes)))
        t0 = time.perf_counter()
        ivf = VectorIndex.build(choose_kind(n), gallery.shape[1], [(np.arange(n), gallery)])
        build = time.perf_counter() - t0
        label = f"gallery {ivf.kind} nlist {ivf.nlist}"
        rows.append((label, build, *timed(ivf.search, probes)))
        if pg is not None:
            rows += postgres_rows(pg, f"{name.replace('-', '_')}_{n}", gallery, probes, args)
        for search, build, got, ms in rows:
            recall = float((got[:, 0] == truth[:, 0]).mean())
            right = truth[:, 0] == own
            kept = float((got[right, 0] == own[right]).mean())
            print(
                f"| {name} | {n:,} | {cos:.3f} | {right.mean():.3f} | {search} | "
                f"{recall:.3f} | {kept:.3f} | {ms:.3f} | {build:.0f} |",
                flush=True,
            )


def timed(search, probes: np.ndarray) -> tuple[np.ndarray, float]:
    """Top-1 ids of each probe (``search`` returns scores and ids, as FAISS does), searched one at a
    time as identify does, and ms per query."""
    t0 = time.perf_counter()
    got = np.concatenate([search(probes[i : i + 1], 1)[1] for i in range(len(probes))])
    return got, 1000 * (time.perf_counter() - t0) / len(probes)


if __name__ == "__main__":
    main()
