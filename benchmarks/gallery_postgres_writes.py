"""Writes into a PostgreSQL gallery: bulk imports with and without the HNSW rebuild, and count(*).

Starts a private server (pgserver: PostgreSQL 16, pgvector 0.6.2; unix socket only; see
``PgBench`` in gallery_search.py) in a temp dir under ``--pg-root``, deleted at the end.

``bulk`` (issue: a 100k import into an existing gallery took many minutes): per ``--existing`` E and
``--added`` N, a gallery of E random unit ``--dim``-d templates (its HNSW index built), then
``Gallery.enroll_many`` of N more, one name per vector, by two paths:

- ``keep index``: the COPY goes into the live HNSW index (``BULK_REBUILD_MIN`` set out of reach: the
  path every bulk write took before);
- ``rebuild``: the backend's rule (``bulk_rebuilds``): DROP INDEX, COPY, CREATE INDEX with
  ``maintenance_work_mem`` for the graph, in the write's one transaction.

Columns: ``write s`` is the transaction (``_enroll_many``), ``enroll_many s`` the public call (with the
impostor estimate it renews), ``rows/s`` N over the write, ``recall@1`` of 200 of the added vectors
found as their own name's best by ``Gallery.search`` (the index as built), the load average before
and after.

``count``: ``SELECT count(*)`` on a table shaped like ``templates`` (bigint identity key, ``vector(dim)``,
NULL metadata) and one shaped like ``identities``, at each of ``--count-sizes`` rows: p50 of 5 warm
runs, before VACUUM (new rows not yet all-visible, as after a bulk write) and after. Then the cost it
has per write: p50 of ``Gallery.enroll`` of one template into the gallery of the last ``bulk`` row,
and how many count(*) statements one enroll runs.

Example: ``nice -n 10 python benchmarks/gallery_postgres_writes.py --existing 3000 --added 20000,100000``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from gallery_search import PgBench, load_avg

from facestyle.gallery import Gallery
from facestyle.gallery import postgres as pg


def units(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Timed:
    """Seconds spent in ``PostgresGallery._enroll_many`` (the write's transaction), last call."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._orig: Callable[..., Any] = pg.PostgresGallery._enroll_many

    def __enter__(self) -> Timed:
        orig = self._orig

        def wrapped(gallery: Any, names: list[str], vecs: np.ndarray) -> int:
            t0 = time.perf_counter()
            try:
                return orig(gallery, names, vecs)
            finally:
                self.seconds = time.perf_counter() - t0

        pg.PostgresGallery._enroll_many = wrapped  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        pg.PostgresGallery._enroll_many = self._orig  # type: ignore[method-assign]


def bulk_row(bench: PgBench, name: str, existing: int, added: int, dim: int, path: str) -> dict[str, Any]:
    url = bench.gallery_url(name)
    base = units(existing, dim, seed=1)
    new = units(added, dim, seed=2)
    saved = pg.BULK_REBUILD_MIN
    with Gallery.open(url, model="synthetic", dim=dim) as g:
        pg.BULK_REBUILD_MIN = 0  # the existing templates: built quickly, by the rebuild path
        try:
            g.enroll_many([f"e{i}" for i in range(existing)], base)
        finally:
            pg.BULK_REBUILD_MIN = saved
        load0 = load_avg()
        if path == "keep index":
            pg.BULK_REBUILD_MIN = 10**12
        try:
            with Timed() as timed:
                t0 = time.perf_counter()
                g.enroll_many([f"p{i}" for i in range(added)], new)
                total = time.perf_counter() - t0
        finally:
            pg.BULK_REBUILD_MIN = saved
        load1 = load_avg()
        probes = np.random.default_rng(3).choice(added, 200, replace=False)
        found = g.search(new[probes], top_k=1)
        recall = float(
            np.mean([bool(c) and c[0].name == f"p{i}" for c, i in zip(found, probes, strict=True)])
        )
        index = bench.conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
            (f"facestyle_{name}.{pg.HNSW_INDEX}",),
        ).fetchone()
    return {
        "existing": existing,
        "added": added,
        "path": path,
        "write_s": timed.seconds,
        "enroll_many_s": total,
        "rows_per_s": added / timed.seconds,
        "recall": recall,
        "index": "valid" if index and index[0] else "MISSING",
        "load": f"{load0} -> {load1}",
    }


def time_sql(conn: Any, sql: str, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        conn.execute(sql).fetchone()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_rows(bench: PgBench, sizes: list[int], dim: int) -> list[dict[str, Any]]:
    conn = bench.conn
    conn.execute("DROP TABLE IF EXISTS cnt_templates, cnt_identities")
    conn.execute(
        "CREATE TABLE cnt_templates (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        f" identity_id bigint NOT NULL, embedding vector({dim}) NOT NULL, image_sha256 text, source text,"
        " detector text, box text, created_at double precision NOT NULL, found_by text)"
    )
    conn.execute(
        "CREATE TABLE cnt_identities (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text"
        " NOT NULL UNIQUE, created_at double precision NOT NULL, updated_at double precision NOT NULL)"
    )
    out, have, now = [], 0, time.time()
    for n in sorted(sizes):
        for start in range(have, n, 100_000):
            stop = min(n, start + 100_000)
            vecs = units(stop - start, dim, seed=start)
            with conn.cursor().copy(
                "COPY cnt_templates (identity_id, embedding, created_at) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "vector", "float8"])
                for i, v in enumerate(vecs, start):
                    copy.write_row((i, v, now))
            with conn.cursor().copy(
                "COPY cnt_identities (name, created_at, updated_at) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "float8", "float8"])
                for i in range(start, stop):
                    copy.write_row((f"person{i:08d}", now, now))
        have = n
        row: dict[str, Any] = {"rows": n, "load0": load_avg()}
        for table in ("cnt_templates", "cnt_identities"):
            row[f"{table}_fresh_ms"] = 1e3 * time_sql(conn, f"SELECT count(*) FROM {table}")
        conn.execute("VACUUM (ANALYZE) cnt_templates, cnt_identities")
        for table in ("cnt_templates", "cnt_identities"):
            row[f"{table}_vacuumed_ms"] = 1e3 * time_sql(conn, f"SELECT count(*) FROM {table}")
        row["table_mb"] = conn.execute("SELECT pg_total_relation_size('cnt_templates')").fetchone()[0] / 2**20
        row["load1"] = load_avg()
        out.append(row)
        print(
            f"{n:>9,} {row['cnt_templates_fresh_ms']:>12.1f} {row['cnt_templates_vacuumed_ms']:>14.1f}"
            f" {row['cnt_identities_fresh_ms']:>13.1f} {row['cnt_identities_vacuumed_ms']:>15.1f}"
            f" {row['table_mb']:>9.0f}  {row['load0']} -> {row['load1']}",
            flush=True,
        )
    conn.execute("DROP TABLE cnt_templates, cnt_identities")
    return out


def enroll_cost(bench: PgBench, name: str, dim: int, runs: int = 20) -> tuple[float, float, float]:
    """p50 s of one Gallery.enroll into gallery ``name``, count(*) statements per enroll, and the
    p50 s of ``count(*)`` on its templates."""
    import psycopg

    counted = [0]
    orig = psycopg.Connection.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if "count(*)" in str(query):
            counted[0] += 1
        return orig(self, query, *args, **kwargs)

    vecs = units(runs, dim, seed=9)
    times = []
    with Gallery.open(bench.gallery_url(name)) as g:
        g.search(vecs[:1], top_k=1)  # the pool and the size cache warm
        psycopg.Connection.execute = execute  # type: ignore[method-assign]
        try:
            for i, v in enumerate(vecs):
                t0 = time.perf_counter()
                g.enroll(f"single{i}", v)
                times.append(time.perf_counter() - t0)
        finally:
            psycopg.Connection.execute = orig  # type: ignore[method-assign]
    count_s = time_sql(bench.conn, f"SELECT count(*) FROM facestyle_{name}.templates")
    return statistics.median(times), counted[0] / runs, count_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--existing", default="3000", help="comma-separated templates already in the gallery")
    ap.add_argument("--added", default="20000,100000", help="comma-separated templates enroll_many adds")
    ap.add_argument("--paths", default="keep index,rebuild")
    ap.add_argument("--count-sizes", default="100000,1000000", help="rows for count(*); empty: skip")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--pg-shared-buffers", default="1GB")
    ap.add_argument("--pg-root", default="/tmp", help="where the private server's temp dir goes")
    args = ap.parse_args()
    existing = [int(x) for x in args.existing.split(",") if x]
    added = [int(x) for x in args.added.split(",") if x]
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    bench = PgBench(args.pg_root, args.pg_shared_buffers)
    try:
        print(
            f"# {os.cpu_count()} cores; BULK_REBUILD_MIN {pg.BULK_REBUILD_MIN}, SHARE {pg.BULK_REBUILD_SHARE}"
        )
        last = None
        if existing and added:
            print(
                f"{'existing':>9} {'added':>8} {'path':<11} {'write s':>8} {'enroll_many s':>13}"
                f" {'rows/s':>8} {'recall@1':>8} {'index':>6}  load before -> after"
            )
        for e in existing:
            for n in added:
                for path in paths:
                    name = f"w{e}_{n}_{path.replace(' ', '')}"
                    r = bulk_row(bench, name, e, n, args.dim, path)
                    last = name
                    print(
                        f"{r['existing']:>9,} {r['added']:>8,} {r['path']:<11} {r['write_s']:>8.1f}"
                        f" {r['enroll_many_s']:>13.1f} {r['rows_per_s']:>8.0f} {r['recall']:>8.3f}"
                        f" {r['index']:>6}  {r['load']}",
                        flush=True,
                    )
        sizes = [int(x) for x in args.count_sizes.split(",") if x]
        if sizes:
            print(
                f"\n{'rows':>9} {'templates ms':>12} {'vacuumed ms':>14} {'identities ms':>13}"
                f" {'vacuumed ms':>15} {'table MB':>9}  load before -> after   (count(*), p50 of 5)"
            )
            count_rows(bench, sizes, args.dim)
        if last is not None:
            p50, per, count_s = enroll_cost(bench, last, args.dim)
            print(
                f"\none Gallery.enroll into {last}: p50 {1e3 * p50:.1f} ms, {per:.1f} count(*) statements"
                f" per enroll; count(*) of its templates {1e3 * count_s:.1f} ms (load {load_avg()})"
            )
    finally:
        bench.close()


if __name__ == "__main__":
    main()
