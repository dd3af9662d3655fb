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
The gallery uses exact flat search for small galleries and, above a switch size, IVF with a 4-bit
fast-scan PQ code per dimension whose best 64 candidates are re-scored exactly (nlist ~4*sqrt(N),
nprobe 3/16 of nlist: see facestyle/gallery/index.py). ``--index gallery`` times that layout through the
gallery's own ``VectorIndex`` (built by the gallery's code, searched for k=36 as ``Gallery.search``
asks, re-scoring included); ``api`` adds SQLite and per-name aggregation (``Gallery.search``).
``ivf`` (IVF-Flat, the previous layout), ``ivf-sq8``, ``ivf-pqfs`` (FAISS's own refine index) and
``hnsw`` are there for comparison. Not run in CI. Examples:
``python benchmarks/gallery_search.py --sizes 10000,100000`` (flat, gallery layout, Gallery.search) and
``python benchmarks/gallery_search.py --sizes 1000000 --index gallery,api --api-max 1000000``.

``--backend postgres`` (issue 21; ``both``: beside the FAISS rows, same vectors, queries and exact
truth, in one run) measures PostgreSQL + pgvector HNSW as the Postgres gallery searches it. It starts
a private server (pgserver: PostgreSQL 16, pgvector 0.6.2; unix socket only) in a temp dir under
``--pg-root``, with ``--pg-shared-buffers`` so table and index stay cached. Per N it makes a Postgres
gallery through the public API (``Gallery.open("postgresql://...&gallery=benchN")``, its HNSW index
dropped, ``Gallery.enroll_many`` with one name per vector: one binary COPY, since COPY into an existing
HNSW index inserts row by row), then per ``--pg-index`` MxEFC builds the gallery's index
(``templates_embedding_hnsw ... USING hnsw (embedding vector_ip_ops) WITH (m, ef_construction)``) with
``--pg-maintenance-work-mem`` and ``--pg-build-workers`` parallel workers (build time and
``pg_total_relation_size`` of the templates table with its indexes are printed), and per
``--pg-ef-search`` times ONE identify per call:
- ``pgvector`` rows (``--pg-paths raw``): raw SQL from a persistent connection, a transaction with
  ``SET LOCAL hnsw.ef_search``, the prepared ``SELECT id, identity_id, embedding ... ORDER BY embedding
  <#> q LIMIT k`` (k = 4*top_k + 16 = 36, what ``Gallery.search`` asks for), the k candidates re-scored
  exactly in numpy (``--pg-mode session``: ef_search set once per connection, one round trip);
  ``cpu_ms`` is the mean CPU per identify of the server backend + the client thread (from /proc: server
  and client share the machine);
- ``pg Gallery.search`` rows (``--pg-paths api``): ``Gallery.search(q, top_k)`` on that gallery, with
  the backend's ``HNSW_EF_SEARCH`` floor set to the ef_search of the row.
The server is stopped and its directory deleted at the end, also on errors and Ctrl-C. Results and
the recommended HNSW constants: docs/gallery-search-postgres.md. Example (issue 21):
``nice -n 10 python benchmarks/gallery_search.py --sizes 1000000 --backend both --index flat,gallery
--pg-index 24x64,16x64 --pg-ef-search 40,80,160,320``.
"""

from __future__ import annotations

import argparse
import gc
import os
import time

import faiss
import numpy as np

from facestyle.gallery.index import (
    IVF_KIND,
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
    cpu_mean_ms: tuple[float, float] | None = None,
    size_mb: float | None = None,
) -> None:
    """One table row. ``cpu`` (FAISS): per-query CPU times, the median is shown; ``cpu_mean_ms``
    (Postgres): mean CPU ms per identify of the server backend and of the client thread, as s+c."""
    if cpu is not None:
        cpu_ms = f"{1e3 * np.median(cpu):.3f}"
    elif cpu_mean_ms is not None:
        cpu_ms = f"{cpu_mean_ms[0]:.2f}+{cpu_mean_ms[1]:.2f}"
    else:
        cpu_ms = "-"
    size = "-" if size_mb is None else f"{size_mb:.0f}"
    print(
        f"{n:>9,} {index:<24} {setting:<12} {build_s:>8.1f} {queries:<7} "
        f"{1e3 * np.median(lat):>8.3f} {1e3 * np.percentile(lat, 99):>8.3f} {cpu_ms:>10} {recall:>8.4f} "
        f"{size:>7} {load_avg():>14}",
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


# ---------------------------------------------------------------------------------------------
# PostgreSQL + pgvector (issue 21): a private pgserver, a gallery, HNSW index builds, timed queries.
# ---------------------------------------------------------------------------------------------

#: The identify query, as a Postgres gallery runs it: the HNSW candidates (k = top_k * 4 + 16, what
#: ``Gallery.search`` asks for), with their vectors so they can be re-scored exactly client-side.
PG_QUERY = "SELECT id, identity_id, embedding FROM {table} ORDER BY embedding <#> %s LIMIT %s"
#: The index name the Postgres gallery gives its HNSW index (facestyle/gallery/postgres.py).
PG_INDEX = "templates_embedding_hnsw"


def load_avg() -> str:
    return "{:.2f}/{:.2f}/{:.2f}".format(*os.getloadavg())


class PgBench:
    """A private PostgreSQL 16 + pgvector server (pgserver) in a temp dir under ``root``, stopped and
    deleted by :meth:`close` (call it in ``finally``).

    Configured as a database server for this workload would be: ``shared_buffers`` large enough that
    table and index stay cached (a read from the OS page cache costs a syscall per 8 kB page),
    ``max_wal_size`` large enough that a 1M load does not checkpoint repeatedly. fsync stays on.
    """

    def __init__(self, root: str, shared_buffers: str) -> None:
        import tempfile

        import pgserver

        self.dir = tempfile.mkdtemp(prefix="facestyle-pgbench-", dir=root)
        self.pgdata = os.path.join(self.dir, "pgdata")
        self.server = None
        self.conn = None
        self.server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self.server.psql(
            f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';\n"
            "ALTER SYSTEM SET max_wal_size = '8GB';\n"
            "ALTER SYSTEM SET max_parallel_maintenance_workers = 2;\n"
        )
        self.server.cleanup()  # restart: shared_buffers needs it
        self.server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self.uri = self.server.get_uri()
        self.conn = self.connect()
        with self.conn.cursor() as cur:
            cur.execute("SHOW shared_buffers")
            sb = cur.fetchone()[0]
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            ext = cur.fetchone()[0]
            cur.execute("SHOW server_version")
            ver = cur.fetchone()[0]
        print(f"# postgres {ver}, pgvector {ext}, shared_buffers {sb}, fsync on, unix socket", flush=True)

    def connect(self):
        import psycopg
        from pgvector.psycopg import register_vector

        conn = psycopg.connect(self.uri, autocommit=True)
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.add_notice_handler(
            lambda d: (
                None if "skipping" in (d.message_primary or "") else print(f"# notice: {d.message_primary}")
            )
        )
        return conn

    def gallery_url(self, name: str) -> str:
        return f"{self.uri}&gallery={name}"

    def backend_cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by this connection's server process (same host)."""
        pid = self.conn.info.backend_pid
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def load(self, name: str, gallery: np.ndarray) -> tuple[str, np.ndarray, float, float]:
        """Make the Postgres gallery ``name`` through the public API (``Gallery.enroll_many``, one name
        per vector: ``id<row>``). Its HNSW index is dropped first, so that the COPY does not insert 1M
        rows into a graph one by one (single-threaded); :meth:`build_index` makes it afterwards with
        the same name and layout.

        Returns the templates table, template id -> gallery row, load seconds and heap MB."""
        from facestyle.gallery import Gallery

        url = self.gallery_url(name)
        schema = f"facestyle_{name}"
        table = f"{schema}.templates"
        t0 = time.perf_counter()
        with Gallery.open(url, model="synthetic", dim=gallery.shape[1]) as g:
            self.conn.execute(f"DROP INDEX IF EXISTS {schema}.{PG_INDEX}")
            g.enroll_many([f"id{i}" for i in range(len(gallery))], gallery)
        self.conn.execute(f"VACUUM (ANALYZE) {table}")
        load_s = time.perf_counter() - t0
        rows = self.conn.execute(
            f"SELECT t.id, i.name FROM {table} t JOIN {schema}.identities i ON i.id = t.identity_id"
        ).fetchall()
        tids = np.array([r[0] for r in rows], np.int64)
        row_of = np.full(int(tids.max()) + 1, -1, np.int64)
        row_of[tids] = [int(r[1][2:]) for r in rows]
        heap = self.conn.execute("SELECT pg_relation_size(%s)", (table,)).fetchone()[0]
        return table, row_of, load_s, heap / 2**20

    def build_index(
        self, table: str, m: int, ef_construction: int, maintenance_work_mem: str, workers: int
    ) -> tuple[float, float, float]:
        """(Re)build the gallery's HNSW index; returns (build s, index MB, table + indexes MB)."""
        schema = table.split(".")[0]
        cur = self.conn.cursor()
        cur.execute(f"DROP INDEX IF EXISTS {schema}.{PG_INDEX}")
        cur.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        cur.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")
        # Without this the planner may choose fewer workers for a small table.
        cur.execute(f"ALTER TABLE {table} SET (parallel_workers = {max(1, int(workers))})")
        t0 = time.perf_counter()
        cur.execute(
            f"CREATE INDEX {PG_INDEX} ON {table} USING hnsw (embedding vector_ip_ops) "
            f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
        )
        build_s = time.perf_counter() - t0
        cur.execute(
            "SELECT pg_relation_size(%s), pg_total_relation_size(%s)", (f"{schema}.{PG_INDEX}", table)
        )
        idx, total = cur.fetchone()
        return build_s, idx / 2**20, total / 2**20

    def warm(self, table: str) -> None:
        """Read the table into shared_buffers, as a server in steady state has it (the index pages are
        there already: the build writes them through shared buffers)."""
        # A sequential scan of a table smaller than shared_buffers / 4 goes through shared buffers.
        self.conn.execute(f"SELECT count(*) FROM {table} WHERE embedding IS NOT NULL").fetchone()

    def time_queries(
        self, table: str, queries: np.ndarray, ef_search: int, k: int, mode: str
    ) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
        """Latency (s) of each identify, mean CPU ms per identify (server backend, client thread),
        and the exactly re-scored top-1 template ids.

        ``mode`` ``local``: each identify is one transaction, ``SET LOCAL hnsw.ef_search`` then the
        prepared query (4 round trips: BEGIN, SET, SELECT, COMMIT), so a pooled connection never
        keeps another caller's setting. ``session``: ef_search set once per connection, one round trip.
        """
        conn = self.conn
        cur = conn.cursor(binary=True)
        sql = PG_QUERY.format(table=table)
        if mode == "session":
            conn.execute(f"SET hnsw.ef_search = {int(ef_search)}")
        lat = np.empty(len(queries))
        top = np.empty(len(queries), np.int64)
        cpu0, tcpu0 = self.backend_cpu_s(), time.thread_time()
        for i in range(len(queries)):
            q = queries[i]
            t0 = time.perf_counter()
            if mode == "local":
                with conn.transaction():
                    cur.execute(f"SET LOCAL hnsw.ef_search = {int(ef_search)}")
                    cur.execute(sql, (q, k), prepare=True)
                    rows = cur.fetchall()
            else:
                cur.execute(sql, (q, k), prepare=True)
                rows = cur.fetchall()
            # Exact re-score, as the gallery reports exact cosines on both backends.
            cand = np.array([r[0] for r in rows], np.int64)
            vecs = np.stack([r[2].to_numpy() for r in rows])
            top[i] = cand[int(np.argmax(vecs @ q))]
            lat[i] = time.perf_counter() - t0
        server_ms = 1e3 * (self.backend_cpu_s() - cpu0) / len(queries)
        client_ms = 1e3 * (time.thread_time() - tcpu0) / len(queries)
        if mode == "session":
            conn.execute("RESET hnsw.ef_search")
        return lat, (server_ms, client_ms), top

    def close(self) -> None:
        import shutil

        try:
            if self.conn is not None:
                self.conn.close()
        finally:
            try:
                if self.server is not None:
                    self.server.cleanup()
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)


def time_pg_gallery_search(
    url: str, queries: np.ndarray, ef_search: int, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``Gallery.search`` on the Postgres gallery, one query per call, its ef_search floor set to
    ``ef_search`` (the backend's module constant, which is what a release would change); returns the
    latencies (s) and the top-1 gallery rows."""
    from facestyle.gallery import Gallery, postgres

    saved = postgres.HNSW_EF_SEARCH
    postgres.HNSW_EF_SEARCH = ef_search
    try:
        with Gallery.open(url, create=False) as g:
            g.search(queries[:20], top_k=top_k)  # the pool's connections made and statements prepared
            lat = np.empty(len(queries))
            top = np.empty(len(queries), np.int64)
            for i in range(len(queries)):
                t0 = time.perf_counter()
                cands = g.search(queries[i], top_k=top_k)[0]
                lat[i] = time.perf_counter() - t0
                top[i] = int(cands[0].name[2:])
    finally:
        postgres.HNSW_EF_SEARCH = saved
    return lat, top


def run_postgres(pg: PgBench, n: int, gallery: np.ndarray, qsets: dict, truth: dict, args) -> None:
    """Make the gallery through the API, then per (m, ef_construction) build its index and time every
    ef_search: raw SQL (``pgvector`` rows) and ``Gallery.search`` (``pg Gallery.search`` rows)."""
    name = f"bench{n}"
    table, row_of, load_s, heap_mb = pg.load(name, gallery)
    print(
        f"# pg N={n:,}: Gallery.enroll_many (binary COPY, index dropped) + VACUUM ANALYZE {load_s:.1f} s, "
        f"heap {heap_mb:.0f} MB, load {load_avg()}",
        flush=True,
    )
    k = args.top_k * 4 + 16
    for m, efc in args.pg_index:
        build_s, idx_mb, total_mb = pg.build_index(
            table, m, efc, args.pg_maintenance_work_mem, args.pg_build_workers
        )
        print(
            f"# pg N={n:,} hnsw m={m} ef_construction={efc}: build {build_s:.1f} s "
            f"(maintenance_work_mem {args.pg_maintenance_work_mem}, {args.pg_build_workers} parallel "
            f"worker(s) + leader), index {idx_mb:.0f} MB, table + indexes {total_mb:.0f} MB, "
            f"load {load_avg()}",
            flush=True,
        )
        pg.warm(table)
        warm = qsets["probe"][: min(200, len(qsets["probe"]))]
        pg.time_queries(table, warm, max(args.pg_ef_search), k, "session")
        for ef in args.pg_ef_search:
            if ef < k:
                print(f"# skipped ef_search={ef}: below k={k}, HNSW would return at most {ef} rows")
                continue
            for mode in args.pg_mode:
                for qname, q in qsets.items():
                    lat, cpu_ms, top = pg.time_queries(table, q, ef, k, mode)
                    recall = float(np.mean(row_of[top] == truth[qname]))
                    setting = f"ef={ef}" + ("" if mode == "local" else " sess")
                    report(
                        n, f"pgvector m={m} efc={efc}", setting, build_s, qname, lat, recall,
                        cpu_mean_ms=cpu_ms, size_mb=total_mb,
                    )  # fmt: skip
            if "api" in args.pg_paths:
                for qname, q in qsets.items():
                    lat, top = time_pg_gallery_search(pg.gallery_url(name), q, ef, args.top_k)
                    recall = float(np.mean(top == truth[qname]))
                    report(
                        n, f"pg Gallery.search {m}x{efc}", f"ef={ef}", build_s, qname, lat, recall,
                        size_mb=total_mb,
                    )  # fmt: skip
    pg.conn.execute(f"DROP SCHEMA facestyle_{name} CASCADE")
    pg.conn.execute("CHECKPOINT")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--probe-cos", type=float, default=0.85)
    ap.add_argument(
        "--index",
        default="flat,gallery,api",
        help="what to time: flat, gallery (the gallery's IVF layout), api (Gallery.search), "
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
    ap.add_argument(
        "--backend",
        choices=("faiss", "postgres", "both"),
        default="faiss",
        help="faiss: the --index kinds; postgres: pgvector HNSW on a private pgserver; both: in one run",
    )
    ap.add_argument("--top-k", type=int, default=5, help="names asked per identify (k = 4*top_k + 16)")
    ap.add_argument(
        "--pg-index",
        default="16x64,16x128",
        help="HNSW builds timed, as MxEF_CONSTRUCTION (each one CREATE INDEX on the same table)",
    )
    ap.add_argument("--pg-ef-search", default="40,80,160", help="hnsw.ef_search values (>= k)")
    ap.add_argument(
        "--pg-mode",
        default="local",
        help="local: SET LOCAL ef_search in a transaction per identify; session: SET once (comma list)",
    )
    ap.add_argument("--pg-maintenance-work-mem", default="4GB", help="for CREATE INDEX (the graph must fit)")
    ap.add_argument("--pg-build-workers", type=int, default=1, help="max_parallel_maintenance_workers")
    ap.add_argument("--pg-shared-buffers", default="4GB")
    ap.add_argument("--pg-root", default="/tmp", help="where the private server's temp dir goes")
    ap.add_argument(
        "--pg-paths",
        default="raw,api",
        help="raw: SQL on the gallery's table; api: Gallery.search on the Postgres gallery (comma list)",
    )
    args = ap.parse_args()
    # Checked before any work: a typo must not surface after an hour of index builds.
    try:
        args.pg_index = [tuple(int(x) for x in s.lower().split("x", 1)) for s in args.pg_index.split(",")]
        args.pg_ef_search = [int(e) for e in args.pg_ef_search.split(",")]
    except ValueError:
        ap.error("--pg-index takes MxEF_CONSTRUCTION,... (e.g. 16x64,24x64); --pg-ef-search integers")
    if any(len(p) != 2 for p in args.pg_index):
        ap.error("--pg-index takes MxEF_CONSTRUCTION,... (e.g. 16x64,24x64)")
    args.pg_mode = args.pg_mode.split(",")
    args.pg_paths = args.pg_paths.split(",")
    if not set(args.pg_paths) <= {"raw", "api"}:
        ap.error("--pg-paths takes raw, api or raw,api")
    if "raw" not in args.pg_paths:
        args.pg_mode = []
    if not set(args.pg_mode) <= {"local", "session"}:
        ap.error("--pg-mode takes local, session or local,session")
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    rng = np.random.default_rng(args.seed)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, dim {args.dim}")
    pg = PgBench(args.pg_root, args.pg_shared_buffers) if args.backend != "faiss" else None
    try:
        run(args, rng, pg)
    finally:
        if pg is not None:
            pg.close()


def run(args: argparse.Namespace, rng: np.random.Generator, pg: PgBench | None) -> None:
    head = (
        "N",
        "index",
        "setting",
        "build_s",
        "queries",
        "p50_ms",
        "p99_ms",
        "cpu_ms",
        "recall@1",
        "size_MB",
    )
    print(
        "{:>9} {:<24} {:<12} {:>8} {:<7} {:>8} {:>8} {:>10} {:>8} {:>7} {:>14}".format(*head, "load 1/5/15")
    )
    for n in [int(s) for s in args.sizes.split(",")]:
        gallery = make_gallery(n, args.dim, rng)
        ids = np.arange(n, dtype=np.int64)
        qsets = make_queries(gallery, args.queries, args.probe_cos, rng)
        truth = {name: exact_top1(gallery, q) for name, q in qsets.items()}

        kinds = set(args.index.split(",")) if args.backend != "postgres" else set()
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
            layout = VectorIndex.build(IVF_KIND, args.dim, [(ids, gallery)])
            build = time.perf_counter() - t0
            label = f"gallery {IVF_KIND} nlist={layout.nlist}"
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
        if pg is not None:
            run_postgres(pg, n, gallery, qsets, truth, args)
        del gallery
        gc.collect()


if __name__ == "__main__":
    main()
