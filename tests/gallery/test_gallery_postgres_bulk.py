"""Bulk writes into a PostgreSQL gallery: a large ``enroll_many`` or import drops the HNSW index, COPYs
and builds the index again in its one transaction; a small one keeps the index. A failure or a kill
anywhere in between leaves the old index and the old rows.

Server-side behaviour is observed, never assumed: an event trigger on ``CREATE INDEX`` (scoped to one
test's schema) records the settings the build ran with, or makes it fail (PostgreSQL 16 fires none for
``REINDEX``: there the statements are checked).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facestyle.errors import GalleryError
from facestyle.gallery import Gallery
from facestyle.gallery import postgres as pg
from facestyle.gallery.base import IdentityRecord, TemplateRecord

REPO = Path(__file__).resolve().parents[2]
MODEL = "test-model"


def units(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def admin(pg_server):
    import psycopg

    return psycopg.connect(pg_server.get_uri(), autocommit=True)


def index_state(pg_server, url: str) -> tuple[int | None, bool | None, str | None]:
    """(oid, valid, definition) of the gallery's HNSW index; Nones if there is none."""
    schema = pg.parse_url(url).schema
    with admin(pg_server) as conn:
        row = conn.execute(
            "SELECT i.indexrelid::bigint, i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " WHERE i.indexrelid = to_regclass(%s)",
            (f"{schema}.{pg.HNSW_INDEX}",),
        ).fetchone()
    return (None, None, None) if row is None else (int(row[0]), bool(row[1]), str(row[2]))


def table_state(pg_server, url: str) -> tuple[int, int]:
    """(templates, generation) straight from the tables."""
    schema = pg.parse_url(url).schema
    with admin(pg_server) as conn:
        n = conn.execute(f"SELECT count(*) FROM {schema}.templates").fetchone()[0]
        gen = conn.execute(f"SELECT value FROM {schema}.meta WHERE key = 'generation'").fetchone()[0]
    return int(n), int(gen)


@contextlib.contextmanager
def on_index_build(pg_server, url: str, action: str = "") -> Iterator[list[tuple[str, str, str]]]:
    """An event trigger on CREATE INDEX run with this gallery's schema first on the search
    path (the gallery's connections): each build is logged as (command tag, maintenance_work_mem in
    kB, max_parallel_maintenance_workers) into the list yielded (read when the block ends; a build
    rolled back leaves no log line), and a count of attempts survives rollbacks (a sequence). ``action``
    is PL/pgSQL run after logging, e.g. a RAISE."""
    schema = pg.parse_url(url).schema
    tag = schema.removeprefix("facestyle_")
    fn, trig, log, seq = f"fs_fn_{tag}", f"fs_et_{tag}", f"fs_log_{tag}", f"fs_seq_{tag}"
    with admin(pg_server) as conn:
        builds: list[tuple[str, str, str]] = []
        try:
            conn.execute(f"CREATE TABLE public.{log} (tag text, mwm text, workers text)")
            conn.execute(f"CREATE SEQUENCE public.{seq}")
            conn.execute(
                f"""CREATE FUNCTION public.{fn}() RETURNS event_trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF (current_schemas(false))[1] = '{schema}' THEN
                    PERFORM nextval('public.{seq}');
                    INSERT INTO public.{log} VALUES (tg_tag,
                      (SELECT setting FROM pg_settings WHERE name = 'maintenance_work_mem'),
                      current_setting('max_parallel_maintenance_workers'));
                    {action}
                  END IF;
                END $$"""
            )
            conn.execute(
                f"CREATE EVENT TRIGGER {trig} ON ddl_command_start WHEN TAG IN ('CREATE INDEX')"
                f" EXECUTE FUNCTION public.{fn}()"
            )
            yield builds
            builds.extend(conn.execute(f"SELECT * FROM public.{log}").fetchall())
            fired = conn.execute(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.{seq}")
            builds.append(("attempts", str(fired.fetchone()[0]), ""))
        finally:
            conn.execute(f"DROP EVENT TRIGGER IF EXISTS {trig}")
            conn.execute(f"DROP FUNCTION IF EXISTS public.{fn}()")
            conn.execute(f"DROP TABLE IF EXISTS public.{log}")
            conn.execute(f"DROP SEQUENCE IF EXISTS public.{seq}")


def attempts(builds: list[tuple[str, str, str]]) -> int:
    return int(next(b[1] for b in builds if b[0] == "attempts"))


def test_the_rule() -> None:
    """At least BULK_REBUILD_MIN rows, and at least BULK_REBUILD_SHARE of what is there."""
    assert pg.bulk_rebuilds(pg.BULK_REBUILD_MIN, 0)
    assert not pg.bulk_rebuilds(pg.BULK_REBUILD_MIN - 1, 0)
    big = int(pg.BULK_REBUILD_MIN / pg.BULK_REBUILD_SHARE) * 4
    assert pg.bulk_rebuilds(int(big * pg.BULK_REBUILD_SHARE), big)
    assert not pg.bulk_rebuilds(int(big * pg.BULK_REBUILD_SHARE) - 1, big)
    # maintenance_work_mem: grows with templates and dimension, capped
    assert pg.hnsw_build_memory(100_000, 128) > pg.hnsw_build_memory(50_000, 128) > pg.HNSW_BUILD_SLACK
    assert pg.hnsw_build_memory(100_000, 512) > pg.hnsw_build_memory(100_000, 128)
    assert pg.hnsw_build_memory(10**9, 128) == pg.HNSW_BUILD_MEM_MAX
    # the measured 1,484 bytes per 128-d template at m=24 (pgvector 0.6.2) fit in the estimate
    assert 1_484 * 100_000 <= pg.hnsw_build_memory(100_000, 128) - pg.HNSW_BUILD_SLACK < 1.1 * 1_484 * 100_000


def test_a_large_enroll_many_rebuilds_the_index_and_a_small_one_keeps_it(
    pg_url: str, pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    monkeypatch.setattr(pg, "BULK_REBUILD_MIN", 200)
    monkeypatch.setattr(pg, "EXACT_MAX_TEMPLATES", 0)  # every search through the HNSW index
    monkeypatch.setattr(pg, "HNSW_BUILD_SLACK", 100 << 20)  # above the server's 64 MB: it is raised
    x = units(1_400, seed=1)
    names = [f"p{i}" for i in range(len(x))]
    with Gallery.open(pg_url, model=MODEL, dim=16) as g:
        first = index_state(pg_server, pg_url)
        assert first[0] is not None and first[1]
        with on_index_build(pg_server, pg_url) as builds:
            g.enroll_many(names[:1_000], x[:1_000])  # 1,000 >= 200 into 0: rebuilt
        want_kb = pg.hnsw_build_memory(1_000, 16) >> 10
        assert builds == [("CREATE INDEX", str(want_kb), "2"), ("attempts", "1", "")]
        second = index_state(pg_server, pg_url)
        assert second[0] != first[0] and second[1] and second[2] == first[2]  # same name and parameters
        with on_index_build(pg_server, pg_url) as builds:
            g.enroll_many(names[1_000:1_199], x[1_000:1_199])  # 199 < 200: kept
            g.enroll_many(names[1_199:], x[1_199:])  # 201 >= 200 but < 0.25 * 1,199: kept
        assert attempts(builds) == 0 and index_state(pg_server, pg_url) == second
        assert table_state(pg_server, pg_url)[0] == 1_400
        found = g.search(x, top_k=1)  # the rebuilt graph, and what was inserted into it, are searched
        assert np.mean([c[0].name == n for c, n in zip(found, names, strict=True)]) >= 0.99
        ran: list[str] = []
        execute = psycopg.Connection.execute

        def spy(self, query, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            ran.append(str(query))
            return execute(self, query, *args, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "execute", spy)
        assert g.rebuild() == 1_400  # REINDEX gets the memory its graph needs too
        monkeypatch.setattr(psycopg.Connection, "execute", execute)
        mwm = f"SET LOCAL maintenance_work_mem = '{pg.hnsw_build_memory(1_400, 16) >> 10}kB'"
        assert ran.index(mwm) < ran.index(f"REINDEX INDEX {pg.HNSW_INDEX}")


def test_a_large_import_rebuilds_and_copying_again_adds_nothing_and_keeps_the_index(
    tmp_path: Path, pg_url: str, pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg, "BULK_REBUILD_MIN", 200)
    x = units(600, seed=2)
    idents = [IdentityRecord(f"n{i}", 1.0, 2.0) for i in range(300)]
    temps = [
        TemplateRecord(v, source=f"s{i}.jpg", name=f"n{i % 300}", created_at=3.0) for i, v in enumerate(x)
    ]
    with Gallery.open(pg_url, model=MODEL, dim=16) as g:
        g.enroll_many(["old"] * 50, units(50, seed=3))
        first = index_state(pg_server, pg_url)
        with on_index_build(pg_server, pg_url) as builds:
            assert g.import_records(idents, temps) == 600
        assert attempts(builds) == 1
        second = index_state(pg_server, pg_url)
        assert second[0] != first[0] and second[1] and second[2] == first[2]
        with on_index_build(pg_server, pg_url) as builds:
            assert g.import_records(idents, temps) == 0  # nothing new: no rebuild
        assert attempts(builds) == 0 and index_state(pg_server, pg_url) == second
        assert g.template_counts()["n7"] == 2 and len(g) == 301
        assert [t.source for t in g.show("n7").templates] == ["s7.jpg", "s307.jpg"]


def test_a_failed_build_leaves_the_old_index_and_the_old_rows(
    pg_url: str, pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DDL is transactional: the DROP INDEX and the COPY before a CREATE INDEX that fails are undone."""
    monkeypatch.setattr(pg, "BULK_REBUILD_MIN", 200)
    with Gallery.open(pg_url, model=MODEL, dim=16) as g:
        g.enroll_many([f"o{i}" for i in range(100)], units(100, seed=4))
        before_index, before_rows = index_state(pg_server, pg_url), table_state(pg_server, pg_url)
        with (
            on_index_build(pg_server, pg_url, "RAISE EXCEPTION 'no index today';") as builds,
            pytest.raises(GalleryError, match="no index today"),
        ):
            g.enroll_many([f"n{i}" for i in range(500)], units(500, seed=5))
        assert attempts(builds) == 1
        assert index_state(pg_server, pg_url) == before_index and before_index[1]
        assert table_state(pg_server, pg_url) == before_rows
        assert len(g) == 100 and "n0" not in g.names()


def test_a_parallel_build_refused_for_memory_runs_again_without_workers(
    pg_url: str, pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that cannot give a parallel build its shared memory (SQLSTATE 53100, as with a small
    /dev/shm) gets the same build again without workers, from a savepoint: nothing else is undone."""
    monkeypatch.setattr(pg, "BULK_REBUILD_MIN", 200)
    refuse = (
        "IF current_setting('max_parallel_maintenance_workers') <> '0' THEN"
        " RAISE EXCEPTION USING ERRCODE = '53100', MESSAGE = 'could not resize shared memory segment';"
        " END IF;"
    )
    with Gallery.open(pg_url, model=MODEL, dim=16) as g:
        with on_index_build(pg_server, pg_url, refuse) as builds:
            assert g.enroll_many([f"n{i}" for i in range(500)], units(500, seed=6)) == 500
        assert attempts(builds) == 2  # the refused one, then the serial one
        assert [b for b in builds if b[0] != "attempts"] == [
            ("CREATE INDEX", str(max(pg.hnsw_build_memory(500, 16) >> 10, 65536)), "0")
        ]
        assert index_state(pg_server, pg_url)[1] and table_state(pg_server, pg_url)[0] == 500


def test_a_bulk_import_killed_mid_copy_leaves_the_old_index_and_rows(
    pg_url: str, pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process doing a large enroll_many is SIGKILLed during its COPY, after its DROP INDEX: meanwhile
    the table is locked against readers; afterwards the old index (the same one, valid) and only the
    old rows are there, and searches use it."""
    import psycopg

    monkeypatch.setattr(pg, "EXACT_MAX_TEMPLATES", 0)
    old = units(300, 8, seed=7)
    with Gallery.open(pg_url, model=MODEL, dim=8) as g:
        g.enroll_many([f"o{i}" for i in range(300)], old)
    before_index, before_rows = index_state(pg_server, pg_url), table_state(pg_server, pg_url)
    assert before_index[1]
    schema = pg.parse_url(pg_url).schema
    n = 400_000  # seconds of COPY: a wide window to be caught in
    code = (
        "import numpy as np\n"
        "from facestyle.gallery import Gallery\n"
        f"v = np.random.default_rng(8).standard_normal(({n}, 8)).astype(np.float32)\n"
        f"with Gallery.open({pg_url!r}) as g:\n"
        f"    g.enroll_many([f'k{{i % 100}}' for i in range({n})], v)\n"
        "print('finished')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        with admin(pg_server) as conn:
            pid = None
            deadline = time.monotonic() + 180
            while pid is None and time.monotonic() < deadline and proc.poll() is None:
                row = conn.execute(
                    "SELECT pid FROM pg_stat_progress_copy WHERE relid = to_regclass(%s)",
                    (f"{schema}.templates",),
                ).fetchone()
                pid = None if row is None else row[0]
                time.sleep(0.01)
            assert pid is not None, f"no COPY seen: {proc.poll()} {proc.stderr.read() if proc.poll() else ''}"
            locks = conn.execute(
                "SELECT mode, granted FROM pg_locks WHERE pid = %s AND relation = to_regclass(%s)",
                (pid, f"{schema}.templates"),
            ).fetchall()
            assert ("AccessExclusiveLock", True) in locks  # the DROP INDEX has run
            with conn.transaction():  # a reader waits for the import
                conn.execute("SET LOCAL lock_timeout = '200ms'")
                with pytest.raises(psycopg.errors.LockNotAvailable):
                    conn.execute(f"SELECT count(*) FROM {schema}.templates")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            deadline = time.monotonic() + 60
            while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
                assert time.monotonic() < deadline, "the server kept the killed client's transaction"
                time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert index_state(pg_server, pg_url) == before_index
    assert table_state(pg_server, pg_url) == before_rows
    with Gallery.open(pg_url) as g:
        assert g.names() == sorted(f"o{i}" for i in range(300))
        found = g.search(old[:50], top_k=1)
        assert [c[0].name for c in found] == [f"o{i}" for i in range(50)]
