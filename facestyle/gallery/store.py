"""The gallery's source of truth: one SQLite file with identities, templates and metadata.

Everything that must survive a crash lives here and nowhere else; the FAISS index is a cache built
from these rows. Writes are short ``BEGIN IMMEDIATE`` transactions in WAL mode with
``synchronous=FULL``, so an enrollment that returned is on disk, and a process killed mid-write
leaves the previous committed state. Every write bumps ``meta.generation``: readers compare it with
the generation stamped in the index file (and in their own memory) to know when to catch up.

Template ids come from ``AUTOINCREMENT`` and are therefore never reused, even after removals: an id
seen once always means the same vector, which is what lets the index be updated by set difference
instead of rebuilt.

Names are data: they are stored in a column, validated only for being printable, and never used to
build a path.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sqlite3
import time
import unicodedata
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestyle.errors import GalleryError, UsageError

#: 2 (issue 20): templates record how their face was found (``found_by``). A version-1 gallery is
#: read as it is (``found_by`` unknown) and upgraded in place when opened for writing (one added column).
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_NAME_LENGTH = 200

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS identities (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    identity_id  INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    embedding    BLOB NOT NULL,
    image_sha256 TEXT,
    source       TEXT,
    detector     TEXT,
    box          TEXT,
    created_at   REAL NOT NULL,
    found_by     TEXT
);
CREATE INDEX IF NOT EXISTS templates_identity ON templates(identity_id);
"""


@dataclass(frozen=True)
class TemplateInfo:
    """One stored template (without its vector)."""

    id: int
    image_sha256: str | None
    source: str | None
    detector: str | None
    box: str | None
    created_at: float
    found_by: str | None = None  # detector | padded | whole; None for templates from before issue 20

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "image_sha256": self.image_sha256,
            "detector": self.detector,
            "found_by": self.found_by,
            "box": None if self.box is None else json.loads(self.box),
            "created": iso_time(self.created_at),
        }


@dataclass(frozen=True)
class IdentityInfo:
    """One enrolled person and the templates stored for them."""

    name: str
    created_at: float
    updated_at: float
    templates: tuple[TemplateInfo, ...]

    def to_dict(self) -> dict:
        """What ``facestyle gallery show --json`` prints (the CLI adds the gallery's model)."""
        return {
            "name": self.name,
            "created": iso_time(self.created_at),
            "updated": iso_time(self.updated_at),
            "templates": [t.to_dict() for t in self.templates],
        }


def iso_time(ts: float) -> str:
    """A stored timestamp as ISO 8601 UTC to the second."""
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat(timespec="seconds")


def check_name(name: str) -> str:
    """Return ``name`` normalised (NFC, stripped) or raise :class:`UsageError`.

    Any printable text is a valid name, including ``../x`` or ``a/b``: names never become paths.
    Control characters are refused because they would garble terminal output and logs.
    """
    if not isinstance(name, str):
        raise UsageError(f"a name must be text, not {type(name).__name__}")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in name):  # undecodable argv bytes arrive as these
        raise UsageError(f"name {name!r} is not valid text (bytes that are not UTF-8?)")
    norm = unicodedata.normalize("NFC", name).strip()
    if not norm:
        raise UsageError("a name cannot be empty")
    if len(norm) > MAX_NAME_LENGTH:
        raise UsageError(f"a name is at most {MAX_NAME_LENGTH} characters (got {len(norm)})")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in norm):
        raise UsageError(f"name {norm!r} contains control characters")
    return norm


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (never loosens an existing file)."""
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)


def _connect(path: Path, uri: str | None = None) -> sqlite3.Connection:
    return sqlite3.connect(
        uri or path,
        uri=uri is not None,
        timeout=60.0,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=64,
    )


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """Open for reading without writing anything: ``mode=ro``. On read-only storage, where SQLite
    cannot create the WAL's shared-memory file, the file is opened ``immutable`` (nothing can change
    it there while we read)."""
    base = "file:" + urllib.parse.quote(str(path.resolve()))
    conn = _connect(path, base + "?mode=ro")
    try:
        conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        if os.access(path.parent, os.W_OK) and not on_read_only_mount(path.parent):
            raise
    return _connect(path, base + "?mode=ro&immutable=1")


def on_read_only_mount(path: Path) -> bool:
    """Whether ``path`` lies on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _as_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class Store:
    """Thin, typed access to the SQLite file. Not thread-safe by itself: :class:`Gallery` serialises."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        if not read_only:
            # SQLite gives its -wal and -shm files the permissions of the database file, so creating
            # the database 0600 ourselves makes the whole set private regardless of the umask.
            create_private_file(path)
        elif not path.exists():
            raise GalleryError(f"{path.parent}: no gallery here (no {path.name})")
        try:
            self.conn = _connect_read_only(path) if read_only else _connect(path)
            self.conn.execute("PRAGMA busy_timeout = 60000")
            if not read_only:
                mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":  # e.g. a network file system; rollback journal is still atomic
                    self.conn.execute("PRAGMA journal_mode = DELETE")
                self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            if not read_only and not self._has_schema():
                self._create_schema()
            version = self.get_meta("schema_version")
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{path}: not a readable gallery database ({exc})") from None
        if version is None or int(version) not in READABLE_VERSIONS:
            raise GalleryError(
                f"{path}: gallery schema version {version}, this facestyle reads "
                + " and ".join(str(v) for v in READABLE_VERSIONS)
            )
        if int(version) < SCHEMA_VERSION and not read_only:
            self._upgrade(int(version))
        self.has_found_by = self._columns("templates").__contains__("found_by")

    def _columns(self, table: str) -> set[str]:
        return {str(row[1]) for row in self.conn.execute(f"PRAGMA table_info({table})")}

    def _upgrade(self, version: int) -> None:
        """Version 1 -> 2: the ``found_by`` column of templates, in one transaction (two processes
        upgrading at once agree: the second finds the column and only sets the version)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if version < 2 and "found_by" not in self._columns("templates"):
                self.conn.execute("ALTER TABLE templates ADD COLUMN found_by TEXT")
            self.conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise

    def _has_schema(self) -> bool:
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'")
        return row.fetchone() is not None and self.get_meta("schema_version") is not None

    def _create_schema(self) -> None:
        """Tables and first metadata of a new gallery, in one transaction. Idempotent (IF NOT EXISTS,
        INSERT OR IGNORE), so two processes creating the same gallery agree. Opening an existing
        gallery never writes: no generation bump that would make every reader reload."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self.conn.execute(statement)
            self._init_meta()
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise

    def _init_meta(self) -> None:
        defaults = {
            "schema_version": str(SCHEMA_VERSION),
            "gallery_id": uuid.uuid4().hex,
            "generation": "0",
            "created_at": repr(time.time()),
        }
        for key, value in defaults.items():
            self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def write(self, append_only: bool = False) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction that also bumps the generation counter.

        Writes that only add rows (enroll) pass ``append_only``; others (remove, rename) also bump
        ``layout_generation``, which tells readers that appending the new rows is not enough to catch up.
        """
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            if not append_only:
                self.conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('layout_generation', '1') ON CONFLICT(key)"
                    " DO UPDATE SET value = CAST(value AS INTEGER) + 1"
                )
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise

    # ---- metadata -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, conn: sqlite3.Connection, key: str, value: str | None) -> None:
        if value is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    # ---- identities and templates ---------------------------------------------------------------
    def identity_id(self, name: str) -> int | None:
        row = self.conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def ensure_identity(self, conn: sqlite3.Connection, name: str, now: float) -> int:
        row = conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()
        if row is not None:
            conn.execute("UPDATE identities SET updated_at = ? WHERE id = ?", (now, row[0]))
            return int(row[0])
        cur = conn.execute(
            "INSERT INTO identities(name, created_at, updated_at) VALUES (?, ?, ?)", (name, now, now)
        )
        return int(cur.lastrowid)

    def has_image(self, identity_id: int, image_sha256: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM templates WHERE identity_id = ? AND image_sha256 = ? LIMIT 1",
            (identity_id, image_sha256),
        ).fetchone()
        return row is not None

    def last_template_id(self) -> int:
        """The highest template id AUTOINCREMENT has given (kept after removals), 0 for none."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'templates'").fetchone()
        return 0 if row is None else int(row[0])

    def image_hashes(self) -> set[tuple[str, str]]:
        """(identity name, content hash) of every template enrolled from a known photo."""
        rows = self.conn.execute(
            "SELECT DISTINCT i.name, t.image_sha256 FROM templates t"
            " JOIN identities i ON i.id = t.identity_id"
            " WHERE t.image_sha256 IS NOT NULL"
        )
        return {(str(name), str(sha)) for name, sha in rows}

    def add_template(
        self,
        conn: sqlite3.Connection,
        identity_id: int,
        vector: np.ndarray,
        now: float,
        image_sha256: str | None = None,
        source: str | None = None,
        detector: str | None = None,
        box: str | None = None,
        found_by: str | None = None,
    ) -> int:
        cur = conn.execute(
            "INSERT INTO templates(identity_id, embedding, image_sha256, source, detector, box, created_at,"
            " found_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (identity_id, _as_blob(vector), image_sha256, source, detector, box, now, found_by),
        )
        return int(cur.lastrowid)

    def import_identity(
        self, conn: sqlite3.Connection, name: str, created_at: float, updated_at: float
    ) -> int:
        """The id of ``name``, created with the given times if new (a copy from another gallery)."""
        conn.execute(
            "INSERT INTO identities(name, created_at, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(name) DO NOTHING",
            (name, created_at, updated_at),
        )
        return int(conn.execute("SELECT id FROM identities WHERE name = ?", (name,)).fetchone()[0])

    def template_count(self, identity_id: int) -> int:
        row = self.conn.execute("SELECT COUNT(*) FROM templates WHERE identity_id = ?", (identity_id,))
        return int(row.fetchone()[0])

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM identities ORDER BY name")]

    def identity_names(self, after: int = -1) -> dict[int, str]:
        return {
            int(i): n for i, n in self.conn.execute("SELECT id, name FROM identities WHERE id > ?", (after,))
        }

    def counts(self) -> tuple[int, int]:
        n_id = self.conn.execute("SELECT COUNT(*) FROM identities").fetchone()[0]
        n_t = self.conn.execute("SELECT COUNT(*) FROM templates").fetchone()[0]
        return int(n_id), int(n_t)

    def layout_generation(self) -> int:
        return int(self.get_meta("layout_generation") or 0)

    def template_ids(self, after: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """``(template ids, identity ids)`` with template id > ``after``, sorted by template id."""
        rows = self.conn.execute(
            "SELECT id, identity_id FROM templates WHERE id > ? ORDER BY id", (after,)
        ).fetchall()
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        arr = np.asarray(rows, dtype=np.int64)
        return arr[:, 0].copy(), arr[:, 1].copy()

    def vectors(
        self, ids: np.ndarray | None, dim: int, batch: int = 20_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(ids, vectors)`` chunks for ``ids`` (all templates when None), in id order."""
        if ids is None:
            last = -1
            while True:
                rows = self.conn.execute(
                    "SELECT id, embedding FROM templates WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                ).fetchall()
                if not rows:
                    return
                yield self._decode(rows, dim)
                last = rows[-1][0]
        else:
            ids = np.asarray(ids, dtype=np.int64)
            for start in range(0, len(ids), 500):
                chunk = [int(i) for i in ids[start : start + 500]]
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    f"SELECT id, embedding FROM templates WHERE id IN ({marks}) ORDER BY id", chunk
                ).fetchall()
                if rows:
                    yield self._decode(rows, dim)

    def _decode(self, rows: list, dim: int) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        blob = b"".join(r[1] for r in rows)
        vecs = np.frombuffer(blob, dtype="<f4")
        if vecs.size != len(rows) * dim:
            raise GalleryError(f"{self.path}: a stored template does not have {dim} dimensions")
        return ids, vecs.reshape(len(rows), dim).astype(np.float32, copy=False)

    def identity_vectors(self, identity_id: int, dim: int) -> np.ndarray:
        rows = self.conn.execute(
            "SELECT id, embedding FROM templates WHERE identity_id = ? ORDER BY id", (identity_id,)
        ).fetchall()
        if not rows:
            return np.empty((0, dim), np.float32)
        return self._decode(rows, dim)[1]

    def labelled_vectors(self, names: Sequence[str] | None, dim: int) -> tuple[np.ndarray, list[str]]:
        """(vectors, owner names) of the templates of ``names`` (None: all), in template id order."""
        query = "SELECT t.id, t.embedding, i.name FROM templates t JOIN identities i ON i.id = t.identity_id"
        if names is None:
            rows = self.conn.execute(query + " ORDER BY t.id").fetchall()
        else:
            rows = []
            for start in range(0, len(names), 500):
                chunk = list(names[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows += self.conn.execute(f"{query} WHERE i.name IN ({marks})", chunk).fetchall()
            rows.sort(key=lambda r: r[0])
        if not rows:
            return np.empty((0, dim), np.float32), []
        return self._decode(rows, dim)[1], [str(r[2]) for r in rows]

    def export(self, dim: int | None) -> tuple[list, list]:
        """Every identity (name, created, updated) and template (name, created, vector, metadata), for
        copying to another gallery: plain tuples, turned into records by the gallery."""
        identities = self.conn.execute(
            "SELECT name, created_at, updated_at FROM identities ORDER BY id"
        ).fetchall()
        if dim is None:
            return identities, []
        rows = self.conn.execute(
            "SELECT t.id, t.embedding, i.name, t.created_at, t.image_sha256, t.source, t.detector, t.box, "
            + ("t.found_by" if self.has_found_by else "NULL")
            + " FROM templates t JOIN identities i ON i.id = t.identity_id ORDER BY t.id"
        ).fetchall()
        vecs = self._decode(rows, dim)[1] if rows else np.empty((0, dim), np.float32)
        return identities, [(r[2], r[3], v, *r[4:]) for r, v in zip(rows, vecs, strict=True)]

    def show(self, name: str) -> IdentityInfo | None:
        row = self.conn.execute(
            "SELECT id, created_at, updated_at FROM identities WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None
        templates = tuple(
            TemplateInfo(int(t[0]), t[1], t[2], t[3], t[4], float(t[5]), t[6])
            for t in self.conn.execute(
                "SELECT id, image_sha256, source, detector, box, created_at, "
                + ("found_by" if self.has_found_by else "NULL")
                + " FROM templates WHERE identity_id = ? ORDER BY id",
                (row[0],),
            )
        )
        return IdentityInfo(name, float(row[1]), float(row[2]), templates)

    def template_counts(self) -> dict[str, int]:
        return {
            n: int(c)
            for n, c in self.conn.execute(
                "SELECT i.name, COUNT(t.id) FROM identities i LEFT JOIN templates t ON t.identity_id = i.id"
                " GROUP BY i.id ORDER BY i.name"
            )
        }
