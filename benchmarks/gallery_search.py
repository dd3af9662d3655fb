"""Identify latency and recall@1 of the gallery's FAISS indexes on synthetic galleries.

For galleries of N random unit vectors (default 10k, 100k, 1M; 128-d, the dlib embedding size) this
prints, per index type and search setting: build time, p50 and p99 latency of ONE query per search
call (what ``facestyle identify`` does per face), and recall@1 against exact search.

Two query sets, because random data is the worst case for approximate search and real queries are not:
- ``probe``: a gallery vector mixed with noise to cosine ~0.85 with its source, about what a second
  photo of an enrolled person scores with dlib's embedder (the case identify is for);
- ``random``: fresh random unit vectors (a stranger; their top-1 is a near-tie among far vectors,
  which is the hardest possible case for HNSW/IVF and irrelevant to the answer, which is "unknown").

Target (issue 3): p50 <= 1 ms per query at 1M with recall@1 >= 0.99 on a 2-core CPU.
The gallery uses exact flat search for small galleries and, from 20k templates, IVF with 4-bit
fast-scan PQ codes whose best 64 candidates are re-scored exactly (nlist ~4*sqrt(N), nprobe
4*sqrt(nlist): see facestyle/gallery/index.py). ``--index gallery`` times that layout through the
gallery's own ``VectorIndex`` (built by the gallery's code, searched for k=36 as ``Gallery.search``
asks, re-scoring included); ``api`` adds SQLite and per-name aggregation (``Gallery.search``).
``ivf`` (IVF-Flat, the previous layout), ``ivf-sq8``, ``ivf-pqfs`` (FAISS's own refine index) and
``hnsw`` are there for comparison. Not run in CI. Examples:
``python benchmarks/gallery_search.py --sizes 10000,100000`` (flat, gallery layout, Gallery.search) and
``python benchmarks/gallery_search.py --sizes 1000000 --index gallery,api --api-max 1000000``.
"""

from __future__ import annotations

import argparse
import gc
import time

import faiss
import numpy as np

from facestyle.gallery.index import (
    IVF_MIN_POINTS_PER_LIST,
    IVF_TRAIN_ITER,
    VectorIndex,
    new_flat_index,
    nprobe_for,
    train_ivf,
)

#: The HNSW settings the gallery used before IVF (kept here for comparison runs).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80


def new_hnsw(dim: int, m: int, ef_construction: int) -> faiss.Index:
    base = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    base.hnsw.efConstruction = ef_construction
    return faiss.IndexIDMap2(base)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_gallery(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 200_000):
        e = min(n, s + 200_000)
        out[s:e] = unit(rng.standard_normal((e - s, dim), dtype=np.float32))
    return out


def make_queries(gallery: np.ndarray, nq: int, cos: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    dim = gallery.shape[1]
    src = gallery[rng.choice(len(gallery), nq, replace=False)]
    noise = unit(rng.standard_normal((nq, dim), dtype=np.float32))
    noise = unit(noise - (noise * src).sum(1, keepdims=True) * src)  # orthogonal to the source
    probe = unit(cos * src + np.sqrt(1 - cos**2) * noise)
    return {"probe": probe, "random": unit(rng.standard_normal((nq, dim), dtype=np.float32))}


def exact_top1(gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    _, ids = flat.search(queries, 1)
    return ids[:, 0]


def time_single(
    index: faiss.Index | VectorIndex, queries: np.ndarray, threads: int, k: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latency (s) of each one-query search, its CPU time (s) in this thread, and the top-1 ids.

    On a shared, loaded machine a query that runs longer than a scheduler time slice waits for the CPU
    as well: wall latency then exceeds the CPU time, which is what the same query costs on an idle core.
    """
    build_threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    lat = np.empty(len(queries))
    cpu = np.empty(len(queries))
    top = np.empty(len(queries), np.int64)
    for i in range(len(queries)):
        q = queries[i : i + 1]
        c0 = time.thread_time()
        t0 = time.perf_counter()
        _, ids = index.search(q, k)
        lat[i] = time.perf_counter() - t0
        cpu[i] = time.thread_time() - c0
        top[i] = ids[0, 0]
    faiss.omp_set_num_threads(build_threads)
    return lat, cpu, top


def report(
    n: int,
    index: str,
    setting: str,
    build_s: float,
    queries: str,
    lat: np.ndarray,
    recall: float,
    cpu: np.ndarray | None = None,
) -> None:
    cpu_ms = "-" if cpu is None else f"{1e3 * np.median(cpu):.3f}"
    print(
        f"{n:>9,} {index:<22} {setting:<12} {build_s:>8.1f} {queries:<7} "
        f"{1e3 * np.median(lat):>8.3f} {1e3 * np.percentile(lat, 99):>8.3f} {cpu_ms:>8} {recall:>8.4f}",
        flush=True,
    )


def build_ivf(
    gallery: np.ndarray,
    ids: np.ndarray,
    nlist: int,
    train_n: int,
    rng: np.random.Generator,
    sq8: bool = False,
) -> tuple[faiss.Index, float, float]:
    """An IVF (inner product) index trained on a random sample; returns it, train and add seconds.

    ``sq8``: lists hold 8-bit scalar-quantised vectors (4x fewer bytes scanned; scores approximate).
    Not used by the gallery: measured to see how far compressed lists get towards the 1M target.
    """
    dim = gallery.shape[1]
    n_train = min(len(gallery), max(train_n, IVF_MIN_POINTS_PER_LIST * nlist))
    sample = gallery[np.sort(rng.choice(len(gallery), n_train, replace=False))]
    t0 = time.perf_counter()
    if sq8:
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = IVF_TRAIN_ITER
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = IVF_TRAIN_ITER
    train_ivf(index, sample)
    t1 = time.perf_counter()
    index.add_with_ids(gallery, ids)
    return index, t1 - t0, time.perf_counter() - t1


def time_gallery_api(gallery: np.ndarray, qsets: dict, truth: dict, threads: int) -> None:
    """The same queries through :class:`Gallery` (one name per vector), as ``identify`` runs them."""
    import tempfile

    from facestyle.gallery import Gallery

    n = len(gallery)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with Gallery.open(tmp, model="synthetic", dim=gallery.shape[1], autosave=False) as g:
            g.enroll_many([f"id{i}" for i in range(n)], gallery)
            build = time.perf_counter() - t0
            kind = g.stats()["index_kind"]
            for name, q in qsets.items():
                lat = np.empty(len(q))
                top = np.empty(len(q), np.int64)
                for i in range(len(q)):
                    t1 = time.perf_counter()
                    cands = g.search(q[i], top_k=5)[0]
                    lat[i] = time.perf_counter() - t1
                    top[i] = int(cands[0].name[2:])
                report(
                    n,
                    f"Gallery.search ({kind})",
                    "top_k=5",
                    build,
                    name,
                    lat,
                    float(np.mean(top == truth[name])),
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--probe-cos", type=float, default=0.85)
    ap.add_argument(
        "--index",
        default="flat,gallery,api",
        help="what to time: flat, gallery (the gallery's IVF-PQ layout), api (Gallery.search), "
        "and for comparison ivf (IVF-Flat), ivf-sq8, ivf-pqfs, hnsw",
    )
    ap.add_argument("--nlist", default="256,1024,4096", help="IVF list counts (skipped below 39*nlist)")
    ap.add_argument("--nprobe", default="16,32,64,96,128,192,256", help="IVF lists scanned per query")
    ap.add_argument("--train", type=int, default=100_000, help="IVF training sample (at least 39*nlist)")
    ap.add_argument("--ef", default="16,32,64,128", help="HNSW efSearch values")
    ap.add_argument("--m", type=int, default=HNSW_M, help="HNSW graph degree")
    ap.add_argument("--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION)
    ap.add_argument("--flat-max", type=int, default=1_000_000, help="skip flat timing above this size")
    ap.add_argument("--threads", type=int, default=0, help="OpenMP threads for building (0: FAISS default)")
    ap.add_argument(
        "--search-threads",
        type=int,
        default=1,
        help="OpenMP threads while timing single queries (1, as the gallery does: see index.py)",
    )
    ap.add_argument("--flat-queries", type=int, default=200, help="queries timed for exact flat search")
    ap.add_argument(
        "--api-max",
        type=int,
        default=100_000,
        help="also time Gallery.search (SQLite check + per-name aggregation) up to this size",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, dim {args.dim}")
    head = ("N", "index", "setting", "build_s", "queries", "p50_ms", "p99_ms", "cpu50_ms", "recall@1")
    print("{:>9} {:<22} {:<12} {:>8} {:<7} {:>8} {:>8} {:>8} {:>8}".format(*head))
    for n in [int(s) for s in args.sizes.split(",")]:
        gallery = make_gallery(n, args.dim, rng)
        ids = np.arange(n, dtype=np.int64)
        qsets = make_queries(gallery, args.queries, args.probe_cos, rng)
        truth = {name: exact_top1(gallery, q) for name, q in qsets.items()}

        kinds = set(args.index.split(","))
        if "flat" in kinds and n <= args.flat_max:
            t0 = time.perf_counter()
            flat = new_flat_index(args.dim)
            flat.add_with_ids(gallery, ids)
            build = time.perf_counter() - t0
            for name, q in qsets.items():
                lat, cpu, top = time_single(flat, q[: args.flat_queries], args.search_threads)
                recall = float(np.mean(top == truth[name][: args.flat_queries]))
                report(n, "flat (IDMap2)", "exact", build, name, lat, recall, cpu)
            del flat
            gc.collect()

        for kind in ("ivf", "ivf-sq8"):
            if kind not in kinds:
                continue
            for nlist in [int(x) for x in args.nlist.split(",")]:
                if n < IVF_MIN_POINTS_PER_LIST * nlist:
                    continue
                ivf, train_s, add_s = build_ivf(gallery, ids, nlist, args.train, rng, sq8=kind == "ivf-sq8")
                print(f"# {kind} nlist={nlist}: train {train_s:.1f} s, add {add_s:.1f} s", flush=True)
                for nprobe in [int(x) for x in args.nprobe.split(",")]:
                    ivf.nprobe = nprobe
                    for name, q in qsets.items():
                        lat, cpu, top = time_single(ivf, q, args.search_threads)
                        recall = float(np.mean(top == truth[name]))
                        label = f"{'ivf-flat' if kind == 'ivf' else kind} nlist={nlist}"
                        report(n, label, f"nprobe={nprobe}", train_s + add_s, name, lat, recall, cpu)
                del ivf
                gc.collect()

        if "gallery" in kinds and n >= IVF_MIN_POINTS_PER_LIST * 32:
            t0 = time.perf_counter()
            layout = VectorIndex.build("ivfpq", args.dim, [(ids, gallery)])
            build = time.perf_counter() - t0
            label = f"gallery ivfpq nlist={layout.nlist}"
            for name, q in qsets.items():
                lat, cpu, top = time_single(layout, q, args.search_threads, k=36)
                recall = float(np.mean(top == truth[name]))
                report(n, label, f"nprobe={nprobe_for(layout.nlist)}", build, name, lat, recall, cpu)
            del layout
            gc.collect()

        if "ivf-pqfs" in kinds:
            # 4-bit fast-scan PQ codes scanned with SIMD, then the best candidates re-scored exactly
            # against the full vectors (RFlat): the scan is ~10x cheaper than IVF-Flat's, scores exact.
            for nlist in [int(x) for x in args.nlist.split(",")]:
                if n < IVF_MIN_POINTS_PER_LIST * nlist:
                    continue
                t0 = time.perf_counter()
                index = faiss.index_factory(
                    args.dim, f"IVF{nlist},PQ{args.dim // 2}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT
                )
                index.train(gallery[rng.choice(n, min(n, max(args.train, 39 * nlist)), replace=False)])
                index.add(gallery)
                build = time.perf_counter() - t0
                print(f"# ivf-pqfs nlist={nlist}: train + add {build:.1f} s", flush=True)
                for nprobe in [int(x) for x in args.nprobe.split(",")]:
                    faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
                    for name, q in qsets.items():
                        lat, cpu, top = time_single(index, q, args.search_threads)
                        recall = float(np.mean(top == truth[name]))
                        report(
                            n,
                            f"ivf-pq4fs+refine nlist={nlist}",
                            f"nprobe={nprobe}",
                            build,
                            name,
                            lat,
                            recall,
                            cpu,
                        )
                del index
                gc.collect()

        if "hnsw" in kinds:
            t0 = time.perf_counter()
            hnsw = new_hnsw(args.dim, args.m, args.ef_construction)
            hnsw.add_with_ids(gallery, ids)
            build = time.perf_counter() - t0
            inner = faiss.downcast_index(hnsw.index)
            for ef in [int(e) for e in args.ef.split(",")]:
                inner.hnsw.efSearch = ef
                for name, q in qsets.items():
                    lat, cpu, top = time_single(hnsw, q, args.search_threads)
                    label = f"hnsw M={args.m} efC={args.ef_construction}"
                    recall = float(np.mean(top == truth[name]))
                    report(n, label, f"efSearch={ef}", build, name, lat, recall, cpu)
            del hnsw, inner
            gc.collect()
        if "api" in kinds and n <= args.api_max:
            time_gallery_api(gallery, qsets, truth, args.search_threads)
        del gallery
        gc.collect()


if __name__ == "__main__":
    main()
