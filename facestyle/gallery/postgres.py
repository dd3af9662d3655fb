"""The PostgreSQL + pgvector backend of :class:`~facestyle.gallery.base.Gallery`.

For when several machines must enroll into and search one population, and the data belongs in a
database that is already backed up and replicated. Opened by ``Gallery.open("postgresql://...")``.

Location: ``postgresql://user@host:5432/db?gallery=NAME`` (or ``postgres://``). ``gallery`` is ours
(``[a-z0-9_]``, default ``default``) and is removed before the URL goes to libpq; every other part is
libpq's (``host=/socket/dir``, ``sslmode``, ...). A password belongs in ``~/.pgpass`` or
``$PGPASSWORD``; one given in the URL is never shown (``path``, messages and ``gallery stats`` carry
the URL without it).

Layout: one schema per gallery, ``facestyle_<NAME>``, so that many galleries share one database:

- ``meta(key, value)``: ``schema_version``, ``gallery_id``, ``generation``, ``templates`` (their
  number, kept by every write), ``created_at``, the model binding (``model``, ``dim``,
  ``model_version``) and a stored ``threshold``/``threshold_source``;
- ``identities(id, name UNIQUE, created_at, updated_at)``;
- ``templates(id, identity_id -> identities ON DELETE CASCADE, embedding vector(dim), image_sha256,
  source, detector, box, created_at, found_by)``: the same metadata as the directory backend, with
  an HNSW index ``USING hnsw (embedding vector_ip_ops)`` made when the gallery is bound to a model
  (until then the dimension is unknown).

Every write is one transaction and bumps ``meta.generation`` (what cached answers such as the impostor
estimate are keyed by). There is no file lock: a check that decides a write (``new``/``add``, the
duplicate-photo check, a rename's target) runs under a transaction-scoped advisory lock on the name,
identities are created with ``INSERT ... ON CONFLICT``, and ``UNIQUE(name)`` is the last word. A
committed enrollment is durable by Postgres's own commit; a client killed mid-write leaves nothing.
A large bulk write (:data:`BULK_REBUILD_MIN`) drops the HNSW index, COPYs and builds the index again
in its transaction, many times faster than a COPY into the live index; searches of that gallery wait
for its commit (the DROP locks the table), and a failure anywhere leaves the old index and rows.

Search: up to :data:`EXACT_MAX_TEMPLATES` (2,000) templates a sequential scan (exact); above, the HNSW
index with ``SET LOCAL hnsw.ef_search`` per query. Either way the candidates' vectors come back and are
re-scored in numpy, so every reported score is an exact cosine and only HNSW's recall is approximate.

Connections come from a ``psycopg_pool.ConnectionPool`` that checks a connection before lending it, so
a long-lived ``Gallery`` survives a server restart; a query cut off by a lost connection is retried
once (a write only if it had not reached its commit), else it fails with one :class:`GalleryError`
line. psycopg is imported on first use: the directory backend never pays for it.
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from facestyle.errors import GalleryError
from facestyle.gallery.base import (
    Gallery,
    IdentityRecord,
    Location,
    TemplateRecord,
    TemplateRow,
    best_per_name,
    check_expected,
    env_seconds,
    no_gallery_here,
    records,
)
from facestyle.gallery.results import Candidate, EnrollResult
from facestyle.gallery.store import IdentityInfo, TemplateInfo

SCHEMES = ("postgresql", "postgres")
#: The URL query parameter naming the gallery (removed before the URL reaches libpq).
GALLERY_PARAM = "gallery"
#: The URL query parameter that sets this connection's HNSW ``ef_search`` (also removed before libpq):
#: the recall/latency trade of one deployment, without a release (docs/gallery-search-postgres.md).
EF_SEARCH_PARAM = "ef_search"
DEFAULT_NAME = "default"
SCHEMA_PREFIX = "facestyle_"
_NAME = re.compile(r"^[a-z0-9_]{1,48}$")

#: The layout version this code writes; :func:`upgrade` brings older schemas here.
SCHEMA_VERSION = 2
#: SQL that takes a schema from version ``v - 1`` to ``v`` (run in order, in one transaction). Version
#: 1 is the first layout. 2: ``meta.templates``, the number of templates, kept by every write (counted
#: here with writers locked out, so that none is missed).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "LOCK TABLE {schema}.templates IN SHARE MODE",
        "INSERT INTO {schema}.meta(key, value) SELECT 'templates', count(*)::text FROM {schema}.templates"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    ),
}

# HNSW parameters, from `benchmarks/gallery_search.py --backend postgres` (docs/gallery-search-postgres.md;
# 128-d random unit vectors, probe queries, 2 loaded cores): at 100k, m=16 / ef_search 40 (pgvector's
# defaults) found the right top-1 for 0.870 of probes, m=24 / 40 for 0.976 and m=24 / 80 for 0.999 at
# ~5 ms of server CPU. At 1M even m=24 / 320 reaches only 0.975 (27 ms of CPU): there the directory
# backend is the one to use. Face embeddings are harder than random vectors
# (`benchmarks/search_face_like.py --postgres`): at 100k, ef_search 80 keeps 0.943 of the right
# identifications and 320 keeps 0.985, so a deployment that wants more recall sets ``?ef_search=`` in
# the gallery URL. ef_search is raised to the number of candidates a search asks for.
HNSW_M = 24
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 80
#: pgvector's ceiling for ef_search: a query wanting more candidates scans exactly instead.
HNSW_EF_SEARCH_MAX = 1000
#: Up to this many templates a search is a sequential scan: exact, and as fast as HNSW at this size
#: (measured at 2,000 128-d templates on the shared 2-core machine under load: Gallery.search p50 1.6 ms
#: scanning, 2.2 ms through HNSW; server time for 3,000: 1.6 ms scan, 0.7 ms index). Above, HNSW wins.
EXACT_MAX_TEMPLATES = 2_000

#: The HNSW index, made when the gallery is bound and again by a bulk write that dropped it.
HNSW_INDEX = "templates_embedding_hnsw"
#: A bulk write (``enroll_many``, ``import_records``, ``gallery migrate``) of at least this many
#: templates, and of at least :data:`BULK_REBUILD_SHARE` of the templates already there, drops the HNSW
#: index, COPYs, and builds the index again, all in its one transaction: COPY into a live HNSW index
#: inserts row by row (a graph search per row), a build inserts into a graph held in memory.
#: Measured by ``benchmarks/gallery_postgres_writes.py`` (docs/gallery.md). Smaller writes keep the
#: index, so that readers are never blocked for them.
BULK_REBUILD_MIN = 5_000
BULK_REBUILD_SHARE = 0.5
#: ``maintenance_work_mem`` for a build: the graph must fit, or pgvector goes on to insert the rest
#: one by one on disk. pgvector 0.6.2 holds per template its neighbour lists (2m slots of 16 bytes at
#: layer 0), the vector and ~200 bytes of element; measured at m=24 (the NOTICE saying after how
#: many tuples the graph no longer fit in 8 and 16 MB, serial build): 1,099 / 1,484 / 3,020 bytes at
#: 32 / 128 / 512 dimensions, i.e. 968 + 4 * dim. The estimate below is ~4% above that, plus room
#: for a parallel build's fixed part (~4 MB measured); never below the server's own setting, and
#: capped (2 GB holds ~1.3M 128-d templates; above, the rest of the build is slower, not wrong).
HNSW_BUILD_SLACK = 32 << 20
HNSW_BUILD_MEM_MAX = 2 << 30

#: Connections kept per Gallery (each search or write borrows one for its duration).
POOL_MIN, POOL_MAX = 1, 4
#: Seconds to wait for a connection (a new one, or one from a busy pool); env overrides.
CONNECT_TIMEOUT = 10.0
TIMEOUT_ENV = "FACESTYLE_PG_TIMEOUT"

INSTALL_HINT = "PostgreSQL galleries need psycopg and pgvector: pip install 'facestyle[postgres]'"


def hnsw_create_sql(if_absent: bool = False) -> str:
    """The statement that makes the HNSW index (on ``templates`` of the schema on the search path)."""
    return (
        f"CREATE INDEX {'IF NOT EXISTS ' if if_absent else ''}{HNSW_INDEX} ON templates USING hnsw"
        f" (embedding vector_ip_ops) WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )


def hnsw_build_memory(templates: int, dim: int) -> int:
    """Bytes of ``maintenance_work_mem`` an HNSW build of ``templates`` ``dim``-d vectors wants (see
    :data:`HNSW_BUILD_SLACK`), at most :data:`HNSW_BUILD_MEM_MAX`."""
    per_template = 256 + 32 * HNSW_M + 4 * int(dim)
    return min(HNSW_BUILD_MEM_MAX, HNSW_BUILD_SLACK + int(templates) * per_template)


def bulk_rebuilds(adding: int, existing: int) -> bool:
    """Whether a write of ``adding`` templates into ``existing`` drops and rebuilds the HNSW index."""
    return adding >= BULK_REBUILD_MIN and adding >= BULK_REBUILD_SHARE * existing


def candidate_statements(templates: int, k: int, ef_search: int | None = None) -> tuple[tuple[str, ...], str]:
    """How a search fetches the ``k`` candidates nearest a query in a gallery of ``templates``: the
    ``SET LOCAL`` statements run first in its transaction, and the SELECT (parameters: the query
    vector, ``k``). The one place both are written, so that a test can EXPLAIN what searches run.
    HNSW's beam is ``ef_search`` (default :data:`HNSW_EF_SEARCH`), never narrower than ``k``.

    Up to :data:`EXACT_MAX_TEMPLATES` (or for more candidates than HNSW can give) a sequential scan,
    exact; above, the HNSW index. They are different statements, not one under different planner
    settings: psycopg prepares a statement run often, and a prepared plan is kept whatever ``enable_*``
    says later. The exact one orders by an expression no index serves (``+ 0``), so it can only be a
    scan; the HNSW one is planned with sequential scans off, so it is always the index (the planner
    would scan a table of a few thousand rows instead)."""
    select = (
        "SELECT c.embedding, i.name FROM (SELECT identity_id, embedding FROM templates"
        " ORDER BY {order} LIMIT %s) c JOIN identities i ON i.id = c.identity_id"
    )
    if templates <= EXACT_MAX_TEMPLATES or k > HNSW_EF_SEARCH_MAX:
        return (), select.format(order="(embedding <#> %s) + 0")
    beam = max(ef_search or HNSW_EF_SEARCH, int(k))
    settings = ("SET LOCAL enable_seqscan = off", f"SET LOCAL hnsw.ef_search = {beam}")
    return settings, select.format(order="embedding <#> %s")


def _modules() -> tuple[Any, Any, Any]:
    """(psycopg, psycopg_pool, pgvector.psycopg), imported on first use."""
    try:
        import pgvector.psycopg
        import psycopg
        import psycopg_pool
    except ImportError:
        raise GalleryError(INSTALL_HINT) from None
    return psycopg, psycopg_pool, pgvector.psycopg


def timeout() -> float:
    """Seconds to wait for the server: ``$FACESTYLE_PG_TIMEOUT``, else :data:`CONNECT_TIMEOUT`."""
    return env_seconds(TIMEOUT_ENV, CONNECT_TIMEOUT)


@dataclass(frozen=True)
class PgLocation:
    """A gallery URL taken apart: what libpq gets, which schema, and what may be shown."""

    conninfo: str
    schema: str
    display: str
    password: str
    #: ``?ef_search=N`` of the URL, or None for :data:`HNSW_EF_SEARCH`.
    ef_search: int | None = None


def parse_url(url: str) -> PgLocation:
    """Split ``postgresql://...?gallery=NAME`` into libpq's URL, the schema and a password-free display."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == GALLERY_PARAM]
    efs = [v for k, v in query if k == EF_SEARCH_PARAM]
    rest = [(k, v) for k, v in query if k not in (GALLERY_PARAM, EF_SEARCH_PARAM)]
    name = names[-1] if names else DEFAULT_NAME
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    password = urllib.parse.unquote(password) or next((v for k, v in rest if k == "password"), "")
    ours = [(GALLERY_PARAM, name)] + ([(EF_SEARCH_PARAM, efs[-1])] if efs else [])
    shown_query = _query([(k, v) for k, v in rest if k != "password"] + ours)
    shown = _url(parts.scheme, f"{user}{at}{hosts}", parts.path, shown_query)
    if not _NAME.match(name):
        raise GalleryError(
            f"{shown}: gallery name {name!r} must be 1-48 of a-z, 0-9 and _ (it names a schema)"
        )
    ef_search = None
    if efs:
        ef_search = int(efs[-1]) if efs[-1].isdigit() else 0
        if not 1 <= ef_search <= HNSW_EF_SEARCH_MAX:
            raise GalleryError(
                f"{shown}: ef_search must be a whole number from 1 to {HNSW_EF_SEARCH_MAX}, not {efs[-1]!r}"
            )
    conninfo = _url(parts.scheme, parts.netloc, parts.path, _query(rest))
    return PgLocation(conninfo, SCHEMA_PREFIX + name, shown, password, ef_search)


def _url(scheme: str, netloc: str, path: str, query: str) -> str:
    """A URL put back together, keeping ``//`` with an empty host (``postgresql:///db`` is a local
    socket; urlunsplit would drop the slashes and libpq would read it as a keyword string)."""
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _query(pairs: list[tuple[str, str]]) -> str:
    """A URL query libpq reads back as given (spaces as %20, never +)."""
    return urllib.parse.urlencode(pairs, safe="/:,", quote_via=urllib.parse.quote)


def _connection_lost(exc: BaseException) -> bool:
    """Whether an OperationalError means the connection is gone (client-side: no SQLSTATE; class 08,
    connection exception; 57P01-57P03, the server shutting down or not accepting), rather than the server
    refusing one statement on a live connection (out of memory, disk full, a statement timeout), which
    a retry would only repeat and which must not be reported as a lost connection."""
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _one_line(exc: BaseException, password: str) -> str:
    """A driver error as one line, without the password."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    text = re.sub(r"\s+", " ", text)
    return text.replace(password, "***") if password else text


class PostgresGallery(Gallery):
    """A gallery in one schema of a PostgreSQL database with pgvector."""

    backend = "postgresql"

    def __init__(self, location: Location, **kwargs: Any) -> None:
        self._loc = parse_url(str(location))
        super().__init__(self._loc.display, **kwargs)
        self._pool: Any = None

    # ---- where galleries live --------------------------------------------------------------------
    @classmethod
    def accepts(cls, location: Location) -> bool:
        return isinstance(location, str) and location.split("://", 1)[0].lower() in SCHEMES

    @classmethod
    def exists(cls, location: Location) -> bool:
        return cls._peek(str(location), "schema_version") is not None

    @classmethod
    def stored_model(cls, location: Location) -> str | None:
        return cls._peek(str(location), "model")

    @classmethod
    def _peek(cls, url: str, key: str) -> str | None:
        """One meta value of the gallery at ``url`` (None: no gallery there), over a short connection."""
        loc = parse_url(url)
        with _direct(loc) as conn:
            if not _schema_exists(conn, loc.schema):
                return None
            row = conn.execute(f"SELECT value FROM {loc.schema}.meta WHERE key = %s", (key,)).fetchone()
            return None if row is None else row[0]

    # ---- opening and closing --------------------------------------------------------------------
    def _attach(self, create: bool) -> None:
        _, psycopg_pool, _ = _modules()
        with _direct(self._loc) as conn:
            if not _schema_exists(conn, self._loc.schema):
                if self.read_only or not create:
                    raise no_gallery_here(self.path)
                self._create_schema(conn)
            self._check_version(conn)
        wait = timeout()
        self._pool = psycopg_pool.ConnectionPool(
            self._loc.conninfo,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            kwargs={"autocommit": True, "connect_timeout": max(1, round(wait))},
            configure=self._configure,
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=wait,
            reconnect_timeout=max(wait, 5.0),
            name=f"facestyle-{self._loc.schema}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=wait)
        except psycopg_pool.PoolTimeout:
            raise self._unreachable() from None

    def _configure(self, conn: Any) -> None:
        """Every pooled connection: vector types, the gallery's schema first on the search path, and
        read-only transactions for a gallery opened read-only."""
        _, _, pgvector_psycopg = _modules()
        path = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
        conn.execute("SELECT set_config('search_path', %s, false)", (f"{self._loc.schema}, {path}",))
        if self.read_only:
            conn.execute("SET default_transaction_read_only = on")
        pgvector_psycopg.register_vector(conn)

    def _create_schema(self, conn: Any) -> None:
        """The schema, its tables and first metadata, in one transaction under the schema's advisory
        lock (two processes creating the same gallery agree). Needs the vector extension: created if
        this role may, else the error says who must."""
        psycopg, _, _ = _modules()
        schema = self._loc.schema
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('facestyle:create', 0))")
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                for statement in _TABLES:
                    conn.execute(statement.format(schema=schema))
                defaults = {"schema_version": str(SCHEMA_VERSION), "gallery_id": uuid.uuid4().hex,
                            "generation": "0", "templates": "0", "created_at": repr(time.time())}  # fmt: skip
                for key, value in defaults.items():
                    conn.execute(
                        f"INSERT INTO {schema}.meta(key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (key, value),
                    )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise GalleryError(
                f"{self.path}: cannot create the gallery ({_one_line(exc, self._loc.password)}); the "
                "vector extension and the schema need a role allowed to create them"
            ) from None

    def _check_version(self, conn: Any) -> None:
        schema = self._loc.schema
        row = conn.execute(f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'").fetchone()
        version = None if row is None else int(row[0])
        if version is None or version > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path}: gallery schema version {version}, this facestyle reads up to {SCHEMA_VERSION}"
            )
        if version < SCHEMA_VERSION:
            if self.read_only:
                raise GalleryError(
                    f"{self.path}: schema version {version} must be upgraded by a writer first"
                )
            upgrade(conn, schema)

    def _release(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(Exception):
                self._pool.close(timeout=5.0)
            self._pool = None

    def flush(self) -> None:
        """Nothing to do: every write is committed in the database when it returns."""
        self._check_open()

    def rebuild(self) -> int:
        """Rebuild the HNSW index (``REINDEX``, with the memory its graph needs; made if it is missing)
        and count the templates again into ``meta.templates`` (should rows have been changed by hand);
        returns the number of templates."""
        self._check_writable()

        def body(conn: Any) -> int:
            conn.execute("LOCK TABLE templates IN SHARE MODE")  # writers wait; REINDEX takes it anyway
            n = int(conn.execute("SELECT count(*) FROM templates").fetchone()[0])
            conn.execute("UPDATE meta SET value = %s WHERE key = 'templates'", (str(n),))
            if self.dim is not None:
                there = conn.execute(
                    "SELECT to_regclass(%s)", (f"{self._loc.schema}.{HNSW_INDEX}",)
                ).fetchone()
                self._build_hnsw(conn, f"REINDEX INDEX {HNSW_INDEX}" if there[0] else hnsw_create_sql(), n)
            return n

        return int(self._run(body, write=True))

    # ---- running statements ------------------------------------------------------------------------
    def _run(
        self,
        body: Callable[[Any], Any],
        write: bool = False,
        templates: Callable[[Any], int] | None = None,
    ) -> Any:
        """``body(conn)`` in one transaction on a pooled connection. A connection lost before the commit
        is retried once on a fresh one (the server rolled the transaction back); one lost during the
        commit is reported, since the write may or may not be done.

        A write also bumps ``meta.generation``, and adds ``templates(result)`` (how many templates the
        body added; negative: removed) to ``meta.templates``, at its end, next to each other: the count
        costs a row lock for as long as the generation's already did (no new waiting), and saves a
        ``count(*)`` of the table in every search and write that needs the size (one at 1M templates:
        35-380 ms, see docs/gallery.md)."""
        self._check_open()
        psycopg, psycopg_pool, _ = _modules()
        for attempt in (1, 2):
            committing = False
            try:
                with self._pool.connection() as conn, conn.transaction():
                    result = body(conn)
                    if write:
                        conn.execute(
                            "UPDATE meta SET value = (value::bigint + 1)::text WHERE key = 'generation'"
                        )
                        added = 0 if templates is None else int(templates(result))
                        if added:
                            conn.execute(
                                "UPDATE meta SET value = (value::bigint + %s)::text WHERE key = 'templates'",
                                (added,),
                            )
                    committing = True
                return result
            except psycopg_pool.PoolTimeout:
                raise self._unreachable() from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if not _connection_lost(exc):  # the server refused the statement: say why, no retry
                    raise GalleryError(f"{self.path}: {_one_line(exc, self._loc.password)}") from None
                if committing and write:
                    raise GalleryError(
                        f"{self.path}: the connection was lost while committing; the write may or may not "
                        f"be done ({_one_line(exc, self._loc.password)})"
                    ) from None
                if attempt == 2:
                    raise GalleryError(
                        f"{self.path}: lost the connection to PostgreSQL "
                        f"({_one_line(exc, self._loc.password)})"
                    ) from None
            except psycopg.Error as exc:
                raise GalleryError(f"{self.path}: {_one_line(exc, self._loc.password)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self) -> GalleryError:
        """Why no connection came within the timeout, in libpq's words where a fresh try gives them."""
        try:
            with _direct(self._loc):
                pass
        except GalleryError as exc:
            return exc
        return GalleryError(f"{self.path}: no free connection to PostgreSQL within {timeout():g} s")

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._run(lambda conn: conn.execute(sql, params, binary=True).fetchall())

    def _lock_names(self, conn: Any, *names: str) -> None:
        """Transaction-scoped advisory locks on ``names`` of this gallery, in one order (no deadlock)."""
        for name in sorted(set(names)):
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{self._loc.schema}\x1f{name}",)
            )

    # ---- metadata ----------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def _write_meta(
        self,
        values: dict[str, str | None],
        if_absent: str | None = None,
        then: Callable[[Any], None] | None = None,
    ) -> None:
        def body(conn: Any) -> None:
            self._lock_names(conn, "\x1fmeta")
            if (
                if_absent is not None
                and conn.execute("SELECT 1 FROM meta WHERE key = %s", (if_absent,)).fetchone()
            ):
                return
            for key, value in values.items():
                if value is None:
                    conn.execute("DELETE FROM meta WHERE key = %s", (key,))
                else:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES (%s, %s)"
                        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        (key, value),
                    )
            if then is not None:
                then(conn)

        self._run(body, write=True)

    def _bind_storage(self, model: str, dim: int, version: str | None) -> None:
        """Bind, and give the templates their fixed dimension and HNSW index, in one transaction."""

        def shape(conn: Any) -> None:
            conn.execute(f"ALTER TABLE templates ALTER COLUMN embedding TYPE vector({int(dim)})")
            conn.execute(hnsw_create_sql(if_absent=True))

        values = {"model": model, "dim": str(int(dim)), "model_version": version}
        self._write_meta(values, if_absent="model", then=shape)

    def _generation(self) -> int:
        return int(self._meta("generation") or 0)

    # ---- reads -------------------------------------------------------------------------------------
    @staticmethod
    def _count(conn: Any) -> int:
        """The number of templates (``meta.templates``), in ``conn``'s transaction."""
        return int(conn.execute("SELECT value FROM meta WHERE key = 'templates'").fetchone()[0])

    def _counts(self) -> tuple[int, int]:
        rows = self._rows(
            "SELECT (SELECT count(*) FROM identities),"
            " (SELECT value::bigint FROM meta WHERE key = 'templates')"
        )
        return int(rows[0][0]), int(rows[0][1])

    def _content(self) -> tuple[int, int]:
        """(templates, last template id) in one statement, without counting identities: every write
        asks for it (the impostor estimate it may renew)."""
        rows = self._rows(
            "SELECT (SELECT value::bigint FROM meta WHERE key = 'templates'),"
            " pg_sequence_last_value(pg_get_serial_sequence('templates', 'id'))"
        )
        return int(rows[0][0]), int(rows[0][1] or 0)

    def _last_template_id(self) -> int:
        # The identity sequence, not max(id): removing the newest template must not lower it.
        rows = self._rows("SELECT pg_sequence_last_value(pg_get_serial_sequence('templates', 'id'))")
        return int(rows[0][0] or 0)

    def _template_count(self, name: str) -> int | None:
        rows = self._rows(
            "SELECT (SELECT count(*) FROM templates t WHERE t.identity_id = i.id) FROM identities i"
            " WHERE i.name = %s",
            (name,),
        )
        return int(rows[0][0]) if rows else None

    def _names(self) -> list[str]:
        return [r[0] for r in self._rows('SELECT name FROM identities ORDER BY name COLLATE "C"')]

    def _show(self, name: str) -> IdentityInfo | None:
        def body(conn: Any) -> IdentityInfo | None:
            row = conn.execute(
                "SELECT id, created_at, updated_at FROM identities WHERE name = %s", (name,)
            ).fetchone()
            if row is None:
                return None
            templates = conn.execute(
                "SELECT id, image_sha256, source, detector, box, created_at, found_by FROM templates"
                " WHERE identity_id = %s ORDER BY id",
                (row[0],),
            ).fetchall()
            return IdentityInfo(name, row[1], row[2], tuple(TemplateInfo(*t) for t in templates))

        return self._run(body)

    def _image_hashes(self) -> set[tuple[str, str]]:
        rows = self._rows(
            "SELECT DISTINCT i.name, t.image_sha256 FROM templates t"
            " JOIN identities i ON i.id = t.identity_id WHERE t.image_sha256 IS NOT NULL"
        )
        return {(str(n), str(s)) for n, s in rows}

    def _template_counts(self) -> dict[str, int]:
        rows = self._rows(
            "SELECT i.name, count(t.id) FROM identities i LEFT JOIN templates t ON t.identity_id = i.id"
            ' GROUP BY i.id ORDER BY i.name COLLATE "C"'
        )
        return {str(n): int(c) for n, c in rows}

    def _identity_vectors(self, name: str) -> np.ndarray | None:
        def body(conn: Any) -> np.ndarray | None:
            row = conn.execute("SELECT id FROM identities WHERE name = %s", (name,)).fetchone()
            if row is None:
                return None
            got = conn.execute(
                "SELECT embedding FROM templates WHERE identity_id = %s ORDER BY id", (row[0],), binary=True
            ).fetchall()
            return _stack([r[0] for r in got], self._bound_dim())

        return self._run(body)

    def _labelled_vectors(self, names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        sql = "SELECT t.embedding, i.name FROM templates t JOIN identities i ON i.id = t.identity_id"
        if names is None:
            rows = self._rows(sql + " ORDER BY t.id")
        else:
            rows = self._rows(sql + " WHERE i.name = ANY(%s) ORDER BY t.id", (list(names),))
        return _stack([r[0] for r in rows], self._bound_dim()), [str(r[1]) for r in rows]

    def _search(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
        def body(conn: Any) -> list[list[Candidate]]:
            n = self._count(conn)
            if n == 0:
                return [[] for _ in range(len(queries))]
            out = []
            for q in queries:
                k = min(n, top_k * 4 + 16)
                while True:
                    vecs, owners = self._candidates(conn, q, k, n)
                    cands = best_per_name(vecs @ q, owners, top_k)
                    if len(cands) >= top_k or k >= n:
                        break
                    k = min(n, k * 4)
                out.append(cands)
            return out

        return self._run(body)

    def _candidates(
        self, conn: Any, query: np.ndarray, k: int, templates: int
    ) -> tuple[np.ndarray, list[str]]:
        """The ``k`` templates nearest ``query`` by inner product in a gallery of ``templates``, run as
        :func:`candidate_statements` says. Their vectors come back for exact re-scoring."""
        settings, select = candidate_statements(templates, k, self._loc.ef_search)
        for statement in settings:
            conn.execute(statement)
        rows = conn.execute(select, (query, int(k)), binary=True).fetchall()
        return _stack([r[0] for r in rows], len(query)), [str(r[1]) for r in rows]

    def _layout(self) -> dict[str, object]:
        def body(conn: Any) -> dict[str, object]:
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
                (self._loc.schema,),
            ).fetchone()[0]
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            server = conn.execute("SHOW server_version").fetchone()[0]
            return {"size": int(size), "pgvector": None if version is None else version[0], "server": server}

        info = self._run(body)
        n = self._counts()[1]
        return {
            "schema": self._loc.schema,
            "schema_version": int(self._meta("schema_version") or 0),
            "index_kind": "hnsw",
            "search": "exact scan" if n <= EXACT_MAX_TEMPLATES else "hnsw",
            "hnsw": {
                "m": HNSW_M,
                "ef_construction": HNSW_EF_CONSTRUCTION,
                "ef_search": self._loc.ef_search or HNSW_EF_SEARCH,
            },
            "database_bytes": info["size"],
            "pgvector_version": info["pgvector"],
            "server_version": info["server"],
        }

    def _export(self) -> tuple[list[IdentityRecord], list[TemplateRecord]]:
        def body(conn: Any) -> tuple[list[IdentityRecord], list[TemplateRecord]]:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            identities = conn.execute(
                "SELECT name, created_at, updated_at FROM identities ORDER BY id"
            ).fetchall()
            templates = conn.execute(
                "SELECT i.name, t.created_at, t.embedding, t.image_sha256, t.source, t.detector, t.box,"
                " t.found_by FROM templates t JOIN identities i ON i.id = t.identity_id ORDER BY t.id",
                binary=True,
            ).fetchall()
            return records(identities, [(t[0], t[1], t[2].to_numpy(), *t[3:]) for t in templates])

        return self._run(body)

    # ---- writes ------------------------------------------------------------------------------------
    def _enroll(self, name: str, rows: list[TemplateRow], new: bool, add: bool) -> EnrollResult:
        look_alikes = self._look_alikes(np.stack([r.vector for r in rows]), name)

        def body(conn: Any) -> EnrollResult:
            self._lock_names(conn, name)  # new/add and the duplicate check hold until the commit
            row = conn.execute("SELECT id FROM identities WHERE name = %s", (name,)).fetchone()
            count = None
            if row is not None:
                count = conn.execute(
                    "SELECT count(*) FROM templates WHERE identity_id = %s", (row[0],)
                ).fetchone()[0]
            check_expected(name, count, new, add)
            sha = rows[0].image_sha256
            if sha and row is not None and conn.execute(
                "SELECT 1 FROM templates WHERE identity_id = %s AND image_sha256 = %s LIMIT 1", (row[0], sha)
            ).fetchone():  # fmt: skip
                return EnrollResult(name, (), duplicate=True, templates=int(count or 0))
            now = time.time()
            ident = self._upsert_identity(conn, name, now)
            ids = tuple(
                conn.execute(
                    "INSERT INTO templates(identity_id, embedding, image_sha256, source, detector, box,"
                    " created_at, found_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (ident, r.vector, r.image_sha256, r.source, r.detector, r.box, now, r.found_by),
                ).fetchone()[0]
                for r in rows
            )
            total = int(count or 0) + len(ids)
            return EnrollResult(name, ids, created=row is None, templates=total, look_alikes=look_alikes)

        return self._run(body, write=True, templates=lambda r: len(r.template_ids))

    @staticmethod
    def _upsert_identity(conn: Any, name: str, now: float) -> int:
        return conn.execute(
            "INSERT INTO identities(name, created_at, updated_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET updated_at = EXCLUDED.updated_at RETURNING id",
            (name, now, now),
        ).fetchone()[0]

    def _enroll_many(self, names: list[str], vecs: np.ndarray) -> int:
        """One transaction: the identities, then one binary COPY of the templates. A large one (see
        :data:`BULK_REBUILD_MIN`) drops the HNSW index first and builds it again after the COPY; readers
        wait for its commit (the DROP locks the table), a failure anywhere leaves the old index."""

        def body(conn: Any) -> int:
            existing = self._drop_hnsw_for(conn, len(vecs))
            now = time.time()
            distinct = sorted(set(names))
            got = conn.execute(
                "INSERT INTO identities(name, created_at, updated_at) SELECT unnest(%s::text[]), %s, %s"
                " ON CONFLICT (name) DO UPDATE SET updated_at = EXCLUDED.updated_at RETURNING name, id",
                (distinct, now, now),
            ).fetchall()
            ids = dict(got)
            self._copy_templates(
                conn,
                [(ids[n], v, None, None, None, None, now, None) for n, v in zip(names, vecs, strict=True)],
            )
            if existing is not None:
                self._build_hnsw(conn, hnsw_create_sql(), existing + len(vecs))
            return len(vecs)

        return self._run(body, write=True, templates=int)

    def _drop_hnsw_for(self, conn: Any, adding: int) -> int | None:
        """Drop the HNSW index when a write of ``adding`` templates is to rebuild it
        (:func:`bulk_rebuilds`); returns the number of templates before the write if it did.

        DROP INDEX takes the table's ACCESS EXCLUSIVE lock until the commit: searches (and other
        writers) wait for the whole import, index build included. It comes first in the transaction,
        before the write holds an identity row another writer might be waiting for (else the two would
        deadlock). A gallery without the index (dropped by hand, or by a benchmark that builds its own)
        is left without one."""
        if adding < BULK_REBUILD_MIN:
            return None
        if (
            conn.execute("SELECT to_regclass(%s)", (f"{self._loc.schema}.{HNSW_INDEX}",)).fetchone()[0]
            is None
        ):
            return None
        existing = self._count(conn)
        if not bulk_rebuilds(adding, existing):
            return None
        conn.execute(f"DROP INDEX {HNSW_INDEX}")
        return existing

    def _build_hnsw(self, conn: Any, statement: str, templates: int) -> None:
        """Run ``statement`` (the index's CREATE INDEX, or REINDEX) with ``maintenance_work_mem`` raised
        for a graph of ``templates`` (:func:`hnsw_build_memory`) for this transaction only.

        A parallel build holds the graph in one shared-memory segment of that size; a server whose
        ``/dev/shm`` is smaller (Docker gives 64 MB unless told otherwise) refuses it with an
        insufficient-resources error (SQLSTATE class 53). Then the build runs again, from a savepoint,
        without workers, in the backend's own memory."""
        psycopg, _, _ = _modules()
        have_kb = int(
            conn.execute(
                "SELECT setting::bigint FROM pg_settings WHERE name = 'maintenance_work_mem'"
            ).fetchone()[0]
        )
        want_kb = hnsw_build_memory(templates, self._bound_dim()) >> 10
        if want_kb > have_kb:
            conn.execute(f"SET LOCAL maintenance_work_mem = '{want_kb}kB'")
        try:
            with conn.transaction():  # a savepoint: a refused build leaves the transaction usable
                conn.execute(statement)
        except psycopg.OperationalError as exc:
            if not (exc.sqlstate or "").startswith("53"):
                raise
            conn.execute("SET LOCAL max_parallel_maintenance_workers = 0")
            conn.execute(statement)

    @staticmethod
    def _copy_templates(conn: Any, rows: list[tuple]) -> None:
        """Insert template rows ``(identity_id, vector, sha, source, detector, box, created_at, found_by)``
        with one binary COPY (far faster than one INSERT each for bulk imports)."""
        sql = (
            "COPY templates (identity_id, embedding, image_sha256, source, detector, box, created_at,"
            " found_by) FROM STDIN WITH (FORMAT BINARY)"
        )
        with conn.cursor().copy(sql) as copy:
            copy.set_types(["int8", "vector", "text", "text", "text", "text", "float8", "text"])
            for row in rows:
                copy.write_row(row)

    def _remove(self, name: str) -> int:
        def body(conn: Any) -> int:
            self._lock_names(conn, name)
            # FOR UPDATE: a bulk write (no name lock) adding to this identity waits for the removal or
            # finishes first, so no template of it is deleted by the cascade uncounted
            row = conn.execute("SELECT id FROM identities WHERE name = %s FOR UPDATE", (name,)).fetchone()
            if row is None:
                raise self._not_enrolled(name)
            n = conn.execute("DELETE FROM templates WHERE identity_id = %s", (row[0],)).rowcount
            conn.execute("DELETE FROM identities WHERE id = %s", (row[0],))
            return int(n)

        return self._run(body, write=True, templates=lambda n: -n)

    def _rename(self, old: str, new: str) -> None:
        def body(conn: Any) -> None:
            self._lock_names(conn, old, new)
            row = conn.execute("SELECT id FROM identities WHERE name = %s", (old,)).fetchone()
            if row is None:
                raise self._not_enrolled(old)
            if old == new:
                return
            if conn.execute("SELECT 1 FROM identities WHERE name = %s", (new,)).fetchone():
                raise self._already_enrolled(new)
            conn.execute(
                "UPDATE identities SET name = %s, updated_at = %s WHERE id = %s", (new, time.time(), row[0])
            )

        self._run(body, write=True)

    def _import(self, identities: list[IdentityRecord], templates: list[TemplateRecord]) -> int:
        """One transaction, like :meth:`_enroll_many`: first which templates are new (a name's template
        with the same vector is there already), so that a large import can drop the HNSW index before
        it writes anything; then the identities and one COPY."""

        def body(conn: Any) -> int:
            have = {
                (name, emb.to_numpy().tobytes())
                for name, emb in conn.execute(
                    "SELECT i.name, t.embedding FROM templates t JOIN identities i ON i.id = t.identity_id",
                    binary=True,
                )
            }
            new = []
            for t in templates:
                key = (t.name, np.asarray(t.vector, np.float32).tobytes())
                if key not in have:
                    have.add(key)
                    new.append(t)
            existing = self._drop_hnsw_for(conn, len(new))
            for r in identities:
                conn.execute(
                    "INSERT INTO identities(name, created_at, updated_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name) DO NOTHING",
                    (r.name, r.created_at, r.updated_at),
                )
            listed = {r.name for r in identities}
            for t in templates:
                if t.name not in listed:
                    listed.add(t.name)
                    self._upsert_identity(conn, t.name, t.created_at)
            ids = dict(conn.execute("SELECT name, id FROM identities").fetchall())
            self._copy_templates(
                conn,
                [
                    (
                        ids[t.name],
                        t.vector,
                        t.image_sha256,
                        t.source,
                        t.detector,
                        t.box,
                        t.created_at,
                        t.found_by,
                    )
                    for t in new
                ],
            )
            if existing is not None:
                self._build_hnsw(conn, hnsw_create_sql(), existing + len(new))
            return len(new)

        return self._run(body, write=True, templates=int)


_TABLES = (
    "CREATE TABLE IF NOT EXISTS {schema}.meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS {schema}.identities (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name text NOT NULL UNIQUE,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {schema}.templates (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        identity_id bigint NOT NULL REFERENCES {schema}.identities(id) ON DELETE CASCADE,
        embedding vector NOT NULL,
        image_sha256 text,
        source text,
        detector text,
        box text,
        created_at double precision NOT NULL,
        found_by text)""",
    "CREATE INDEX IF NOT EXISTS templates_identity ON {schema}.templates (identity_id, image_sha256)",
)


def upgrade(conn: Any, schema: str) -> int:
    """Bring ``schema`` to :data:`SCHEMA_VERSION` with the steps of :data:`MIGRATIONS`, in one
    transaction under the schema's advisory lock (a second upgrader finds the work done). Returns the
    version it found."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{schema}\x1fupgrade",))
        found = int(
            conn.execute(f"SELECT value FROM {schema}.meta WHERE key = 'schema_version'").fetchone()[0]
        )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS.get(version, ()):
                conn.execute(statement.format(schema=schema))
        conn.execute(
            f"UPDATE {schema}.meta SET value = %s WHERE key = 'schema_version'",
            (str(max(found, SCHEMA_VERSION)),),
        )
    return found


@contextlib.contextmanager
def _direct(loc: PgLocation) -> Iterator[Any]:
    """One short-lived connection (opening, checking, creating), its errors as one line."""
    psycopg, _, _ = _modules()
    try:
        conn = psycopg.connect(loc.conninfo, autocommit=True, connect_timeout=max(1, round(timeout())))
    except psycopg.Error as exc:
        raise GalleryError(
            f"{loc.display}: cannot connect to PostgreSQL ({_one_line(exc, loc.password)})"
        ) from None
    try:
        yield conn
    except psycopg.Error as exc:
        raise GalleryError(f"{loc.display}: {_one_line(exc, loc.password)}") from None
    finally:
        conn.close()


def _schema_exists(conn: Any, schema: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'meta'",
            (schema,),
        ).fetchone()
        is not None
    )


def _stack(vectors: list[Any], dim: int) -> np.ndarray:
    """pgvector values as an (n, dim) float32 array."""
    if not vectors:
        return np.empty((0, dim), np.float32)
    return np.stack([v.to_numpy() for v in vectors]).astype(np.float32, copy=False)
