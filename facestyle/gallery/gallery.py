"""The directory backend of :class:`~facestyle.gallery.base.Gallery`: SQLite truth, FAISS search.

The default backend: a gallery is a directory on one machine's disk. This module imports no torch
(``facestyle gallery list`` stays fast). :class:`Gallery` (the interface, from
:mod:`facestyle.gallery.base`) is importable from here as before.

Layout of a gallery directory (created 0700, files 0600):

- ``gallery.sqlite`` (+ ``-wal``/``-shm``): the truth. See :mod:`facestyle.gallery.store`.
- ``index.faiss``: a cache of the templates for search, stamped with the SQLite generation it
  reflects. A missing, stale, corrupt or foreign file is caught up or rebuilt from SQLite on open.
- ``lock``: the inter-process writer lock (a kernel ``flock``; nothing to clean up after a crash).

Consistency model: an enrollment is done when its SQLite transaction commits. The index is brought up
to date in memory right after, and written to disk by ``flush()``/``close()`` (or after every write
with ``autosave=True``). A process killed between the two leaves an index file one or more
generations behind; whoever opens the gallery next adds the missing templates from SQLite, so nothing
reported as done is ever lost. Every search first compares the SQLite generation with the one in
memory, so a long-lived ``Gallery`` also sees enrollments made by other processes.

Threads: one ``Gallery`` may be shared. Searches run concurrently (FAISS releases the GIL); writes
take an exclusive lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from facestyle.errors import GalleryError
from facestyle.gallery.base import (
    DEFAULT_GALLERY,
    EXACT_TEMPLATES,
    GALLERY_ENV,
    LOOK_ALIKE,
    SAMPLED_IDENTITIES,
    Gallery,
    IdentityRecord,
    Location,
    TemplateRecord,
    TemplateRow,
    bound_model,
    check_expected,
    env_seconds,
    gallery_exists,
    is_url,
    log,
    model_mismatch,
    no_gallery_here,
    read_only_error,
    records,
    resolve_location,
    unit_rows,
)
from facestyle.gallery.index import IndexInvalid, Stamp, VectorIndex, choose_kind
from facestyle.gallery.locking import ReadWriteLock, WriterLock
from facestyle.gallery.results import Candidate, EnrollResult
from facestyle.gallery.store import IdentityInfo, Store, on_read_only_mount
from facestyle.threads import thread_count

__all__ = [
    "DB_NAME",
    "DEFAULT_GALLERY",
    "EXACT_TEMPLATES",
    "GALLERY_ENV",
    "INDEX_NAME",
    "LOCK_NAME",
    "LOOK_ALIKE",
    "SAMPLED_IDENTITIES",
    "DirectoryGallery",
    "Gallery",
    "bound_model",
    "gallery_exists",
    "model_mismatch",
    "no_gallery_here",
    "read_only_error",
    "resolve_gallery_path",
    "unit_rows",
]

DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.faiss"
LOCK_NAME = "lock"

#: How long a writer waits for another process's write before giving up (seconds; env overrides).
LOCK_TIMEOUT = 120.0
LOCK_TIMEOUT_ENV = "FACESTYLE_LOCK_TIMEOUT"

#: The old name of :func:`~facestyle.gallery.base.resolve_location` (a URL stays a string).
resolve_gallery_path = resolve_location


def lock_timeout() -> float:
    """Seconds a write waits for the gallery's lock: ``$FACESTYLE_LOCK_TIMEOUT``, else 120."""
    return env_seconds(LOCK_TIMEOUT_ENV, LOCK_TIMEOUT)


def _writable(path: Path) -> bool:
    """Whether files can be created in the gallery directory (a read-only mount, or someone else's)."""
    return os.access(path, os.W_OK | os.X_OK) and not on_read_only_mount(path)


@dataclass
class _Live:
    """In-memory map from template id to identity, mirroring SQLite at generation ``gen``."""

    gen: int = -1
    layout_gen: int = -1
    tids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    owners: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    names: dict[int, str] = field(default_factory=dict)


def _single_thread_faiss(nq: int) -> contextlib.AbstractContextManager[None]:
    """Search small batches on one OpenMP thread.

    On a busy 2-core machine, FAISS's OpenMP fan-out for a single query costs far more than it saves
    (measured: flat 10k, 0.37 ms with 1 thread vs 10.7 ms with 2 under load). The setting is per
    calling thread in libgomp, so concurrent searches in other threads are not affected.
    """
    if nq > 8:
        return contextlib.nullcontext()
    return thread_count(faiss.omp_get_max_threads, faiss.omp_set_num_threads, 1)


class DirectoryGallery(Gallery):
    """A gallery directory: SQLite (the truth) and a FAISS index (a cache of it)."""

    backend = "directory"

    def __init__(self, location: Location, **kwargs: object) -> None:
        super().__init__(location, **kwargs)  # type: ignore[arg-type]
        self._store: Store = None  # type: ignore[assignment]
        self._db = threading.RLock()  # one SQLite connection, used by one thread at a time
        self._rw = ReadWriteLock()
        self._lock = WriterLock(Path(location) / LOCK_NAME, timeout=lock_timeout())
        self._index: VectorIndex | None = None
        self._live = _Live()
        self._file_gen = -1  # generation stamped in the index file we last read or wrote

    _rebuilt = False  # set when opening had to rebuild the index: write it at once for the others
    _skip_index_file = False  # set by rebuild(): build from the database, not from the index file

    # ---- where galleries live --------------------------------------------------------------------
    @classmethod
    def accepts(cls, location: Location) -> bool:
        return not is_url(location)

    @classmethod
    def exists(cls, location: Location) -> bool:
        return (Path(location) / DB_NAME).is_file()

    @classmethod
    def stored_model(cls, location: Location) -> str | None:
        db = Path(location) / DB_NAME
        if not db.is_file():
            return None
        store = Store(db, read_only=True)
        try:
            return store.get_meta("model")
        finally:
            store.close()

    # ---- opening and closing --------------------------------------------------------------------
    def _attach(self, create: bool) -> None:
        gpath: Path = self.path
        db = gpath / DB_NAME
        if gpath.exists() and not gpath.is_dir():
            raise GalleryError(f"{gpath}: exists and is not a directory")
        if not db.exists():
            if self.read_only or not create:
                raise no_gallery_here(gpath)
            if not gpath.exists():
                try:
                    gpath.mkdir(mode=0o700, parents=True)
                except OSError as exc:
                    raise GalleryError(
                        f"{gpath}: cannot create the gallery directory ({exc.strerror})"
                    ) from None
        if self.read_only:
            self._store = Store(db, read_only=True)
            return
        if not _writable(gpath):
            raise read_only_error(gpath, "the storage is read-only or not ours to write")
        with self._lock():
            self._store = Store(db)
            self._remove_stale_temp_files()

    def _opened(self) -> None:
        with self._rw.write():
            self._sync()
        if self._rebuilt and not self.read_only:
            self.flush()

    def _release(self) -> None:
        if self._store is not None:
            with self._db:
                self._store.close()

    def _remove_stale_temp_files(self) -> None:
        # Only lock holders write temp files, and we hold the lock: any left over are from dead writers.
        for tmp in self.path.glob(f"{INDEX_NAME}.tmp-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    # ---- metadata ----------------------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        with self._db:
            return self._store.get_meta(key)

    def _write_meta(self, values: dict[str, str | None], if_absent: str | None = None) -> None:
        def body(conn: object) -> None:
            if if_absent is not None and self._store.get_meta(if_absent) is not None:
                return  # another process wrote it meanwhile
            for key, value in values.items():
                self._store.set_meta(conn, key, value)  # type: ignore[arg-type]

        # Binding happens while opening, before the index is first brought up to date: leave it alone.
        binding = if_absent is not None
        self._write(body, append_only=if_absent != "model", sync=not binding, templates=False)

    def _generation(self) -> int:
        self._refresh()
        return self._live.gen

    # ---- keeping the index in step with SQLite ---------------------------------------------------
    @contextlib.contextmanager
    def _read_txn(self) -> Iterator[None]:
        """One SQLite read snapshot (WAL readers do not block writers) for a multi-query catch-up."""
        with self._db:
            self._store.conn.execute("BEGIN")
            try:
                yield
            finally:
                self._store.conn.execute("COMMIT")

    def _sync(self) -> None:
        """Bring the in-memory index and id map to the current SQLite generation (caller holds _rw.write)."""
        with self._db:
            gen = self._store.generation()
            if gen == self._live.gen and (self._index is not None or self._store.get_meta("dim") is None):
                return
            with self._read_txn():
                self._sync_locked()

    def _sync_locked(self) -> None:
        store = self._store
        gen = store.generation()
        dim_text = store.get_meta("dim")
        if dim_text is None:  # an empty gallery not bound to a model yet
            self._live = _Live(gen=gen, layout_gen=store.layout_generation())
            return
        dim = int(dim_text)
        layout_gen = store.layout_generation()
        live = self._live
        if (
            self._index is not None
            and live.layout_gen == layout_gen
            and live.gen >= 0
            and not self._index.needs_rebuild(len(live.tids))
        ):
            # Only enrollments since we last looked: append their rows (cheap at any gallery size).
            new_tids, new_owners = store.template_ids(after=int(live.tids[-1]) if len(live.tids) else -1)
            names = dict(live.names)
            names.update(store.identity_names(after=max(live.names, default=-1)))
            tids = np.concatenate([live.tids, new_tids])
            if not self._index.needs_rebuild(len(tids)):
                for ids, vecs in store.vectors(new_tids, dim):
                    self._index.add(ids, vecs)
                self._live = _Live(gen, layout_gen, tids, np.concatenate([live.owners, new_owners]), names)
                return
        tids, owners = store.template_ids()
        names = store.identity_names()
        model = store.get_meta("model") or ""
        gallery_id = store.get_meta("gallery_id") or ""
        if self._index is None and not self._skip_index_file:
            try:
                self._index, stamp = VectorIndex.load(self.path / INDEX_NAME, gallery_id, model, dim)
                self._file_gen = stamp.generation
                if stamp.generation > gen:
                    raise IndexInvalid("the index file is newer than the database (restored backup?)")
                self._spot_check(tids, dim)
            except IndexInvalid as why:
                if len(tids) or str(why) != "no index file":
                    self._note(f"{self.path}: {why}; rebuilding the index from the database")
                self._index = None
        index = self._index
        kind = choose_kind(len(tids), index.kind if index else None)
        if index is not None and index.needs_rebuild(len(tids)):
            index = None
        if index is None:
            self._index = self._build(kind, dim, len(tids))
            self._rebuilt = True
            self._file_gen = -1
        else:
            index.remove(np.setdiff1d(index.ids, tids, assume_unique=True))
            new = np.setdiff1d(tids, index.ids, assume_unique=True)
            if len(new):
                for ids, vecs in store.vectors(new, dim):
                    index.add(ids, vecs)
        self._live = _Live(gen, layout_gen, tids, owners, names)

    def _build(self, kind: str, dim: int, n: int) -> VectorIndex:
        t0 = time.perf_counter()
        if kind != "flat":
            self._note(f"{self.path}: building an IVF-PQ index of {n:,} templates (~30-60 s per million)")
        index = VectorIndex.build(kind, dim, self._store.vectors(None, dim))
        log.info("built %s index of %d templates in %.1f s", kind, index.ntotal, time.perf_counter() - t0)
        return index

    def _spot_check(self, tids: np.ndarray, dim: int, samples: int = 8) -> None:
        """Compare a few vectors of the loaded index with SQLite: catches a file from another state."""
        assert self._index is not None
        have = np.intersect1d(tids, self._index.ids, assume_unique=True)
        if len(have) == 0:
            return
        pick = have[np.linspace(0, len(have) - 1, min(samples, len(have))).astype(int)]
        for ids, vecs in self._store.vectors(np.unique(pick), dim):
            for i, v in zip(ids, vecs, strict=True):
                got = self._index.reconstruct(int(i))
                if not np.allclose(got, v / np.linalg.norm(v), atol=1e-5):
                    raise IndexInvalid("the index file does not match the database")

    def _refresh(self) -> None:
        """Catch up with writes made by other processes (cheap when there were none)."""
        with self._db:
            gen = self._store.generation()
        if gen != self._live.gen:
            with self._rw.write():
                self._sync()

    def flush(self) -> None:
        """Write the index file if it is behind the database (takes the writer lock briefly)."""
        self._check_open()
        if self.read_only:
            return
        with self._rw.write(), self._lock():
            self._sync()
            if self._index is None or self._file_gen == self._live.gen:
                return
            gallery_id = self._meta("gallery_id") or ""
            model = self._meta("model") or ""
            stamp = Stamp(gallery_id, model, self._index.dim, self._live.gen, self._index.kind)
            self._index.save(self.path / INDEX_NAME, stamp)
            self._file_gen = self._live.gen

    def rebuild(self) -> int:
        """Rebuild the index from SQLite and write it; returns the number of templates indexed."""
        self._check_writable()
        # Build the new index in memory and replace the file in one rename: a reader opening the
        # gallery meanwhile sees the old index or the new one, never a missing file.
        with self._rw.write(), self._lock():
            self._index = None
            self._live = _Live()
            self._skip_index_file = True
            try:
                self._sync()
            finally:
                self._skip_index_file = False
            self._file_gen = -1
        self.flush()
        return 0 if self._index is None else self._index.ntotal

    # ---- writes ----------------------------------------------------------------------------------
    def _write(
        self,
        body: Callable[..., object],
        append_only: bool = False,
        sync: bool = True,
        templates: bool = True,
    ) -> object:
        """Run ``body(conn)`` in one SQLite transaction under both locks, then update the index.

        ``append_only`` (the body only inserts rows) lets every reader catch up by appending.
        ``sync=False`` (binding a model, before the first catch-up) leaves the index alone.
        ``templates=False`` (only metadata was written: a threshold, the impostor estimate) does not
        write the index file again with autosave: it holds the same vectors, and a reader of a file
        stamped with an older generation catches up by appending nothing.
        """
        self._check_open()
        if self.read_only:
            raise read_only_error(self.path)
        with self._rw.write(), self._lock():
            if sync:
                self._sync()
            with self._db, self._store.write(append_only) as conn:
                result = body(conn)
            if sync:
                self._sync()
        if self.autosave and sync and templates:
            self.flush()
        return result

    def _enroll(self, name: str, rows: list[TemplateRow], new: bool, add: bool) -> EnrollResult:
        def body(conn: object) -> EnrollResult:
            store = self._store
            existing = store.identity_id(name)
            check_expected(name, None if existing is None else store.template_count(existing), new, add)
            sha = rows[0].image_sha256
            if sha and existing is not None and store.has_image(existing, sha):
                return EnrollResult(name, (), duplicate=True, templates=store.template_count(existing))
            look_alikes = self._look_alikes(np.stack([r.vector for r in rows]), name)
            now = time.time()
            ident = store.ensure_identity(conn, name, now)
            ids = tuple(store.add_template(conn, ident, r.vector, now, r.image_sha256, r.source,
                                           r.detector, r.box, r.found_by) for r in rows)  # fmt: skip
            return EnrollResult(
                name,
                ids,
                created=existing is None,
                templates=store.template_count(ident),
                look_alikes=look_alikes,
            )

        return self._write(body, append_only=True)  # type: ignore[return-value]

    def _enroll_many(self, names: list[str], vecs: np.ndarray) -> int:
        def body(conn: object) -> int:
            now = time.time()
            idents: dict[str, int] = {}
            for name, v in zip(names, vecs, strict=True):
                if name not in idents:
                    idents[name] = self._store.ensure_identity(conn, name, now)
                self._store.add_template(conn, idents[name], v, now)
            return len(vecs)

        return self._write(body, append_only=True)  # type: ignore[return-value]

    def _remove(self, name: str) -> int:
        def body(conn: object) -> int:
            ident = self._store.identity_id(name)
            if ident is None:
                raise self._not_enrolled(name)
            n = conn.execute("SELECT COUNT(*) FROM templates WHERE identity_id = ?", (ident,)).fetchone()[0]
            conn.execute("DELETE FROM templates WHERE identity_id = ?", (ident,))
            conn.execute("DELETE FROM identities WHERE id = ?", (ident,))
            return int(n)

        return self._write(body)  # type: ignore[return-value]

    def _rename(self, old: str, new: str) -> None:
        def body(conn: object) -> None:
            ident = self._store.identity_id(old)
            if ident is None:
                raise self._not_enrolled(old)
            if old == new:
                return
            if self._store.identity_id(new) is not None:
                raise self._already_enrolled(new)
            conn.execute(
                "UPDATE identities SET name = ?, updated_at = ? WHERE id = ?", (new, time.time(), ident)
            )

        self._write(body)

    def _import(self, identities: list[IdentityRecord], templates: list[TemplateRecord]) -> int:
        def body(conn: object) -> int:
            store = self._store
            idents = {
                r.name: store.import_identity(conn, r.name, r.created_at, r.updated_at) for r in identities
            }
            have: dict[int, set[bytes]] = {}
            added = 0
            for t in templates:
                ident = idents.get(t.name) or store.import_identity(conn, t.name, t.created_at, t.created_at)
                idents[t.name] = ident
                if ident not in have:
                    have[ident] = {v.tobytes() for v in store.identity_vectors(ident, len(t.vector))}
                key = np.asarray(t.vector, dtype=np.float32).tobytes()
                if key in have[ident]:
                    continue
                have[ident].add(key)
                store.add_template(conn, ident, t.vector, t.created_at, t.image_sha256, t.source,
                                   t.detector, t.box, t.found_by)  # fmt: skip
                added += 1
            return added

        return self._write(body, append_only=True)  # type: ignore[return-value]

    # ---- reads -----------------------------------------------------------------------------------
    def _counts(self) -> tuple[int, int]:
        with self._db:
            return self._store.counts()

    def _last_template_id(self) -> int:
        with self._db:
            return self._store.last_template_id()

    def _template_count(self, name: str) -> int | None:
        with self._db:
            ident = self._store.identity_id(name)
            return None if ident is None else self._store.template_count(ident)

    def _names(self) -> list[str]:
        with self._db:
            return self._store.names()

    def _show(self, name: str) -> IdentityInfo | None:
        with self._db:
            return self._store.show(name)

    def _image_hashes(self) -> set[tuple[str, str]]:
        with self._db:
            return self._store.image_hashes()

    def _template_counts(self) -> dict[str, int]:
        with self._db:
            return self._store.template_counts()

    def _identity_vectors(self, name: str) -> np.ndarray | None:
        dim = self._bound_dim()
        with self._db:
            ident = self._store.identity_id(name)
            return None if ident is None else self._store.identity_vectors(ident, dim)

    def _labelled_vectors(self, names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        with self._db:
            return self._store.labelled_vectors(names, self._bound_dim())

    def _export(self) -> tuple[list[IdentityRecord], list[TemplateRecord]]:
        with self._db, self._read_txn():
            return records(*self._store.export(self.dim))

    def _search(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
        self._refresh()
        with self._rw.read():
            index, live = self._index, self._live
            if index is None or index.ntotal == 0 or len(live.tids) == 0:
                return [[] for _ in range(len(queries))]
            results: list[list[Candidate] | None] = [None] * len(queries)
            todo = np.arange(len(queries))
            k = min(index.ntotal, top_k * 4 + 16)
            while len(todo):
                with _single_thread_faiss(len(todo)):
                    scores, ids = index.search(queries[todo], k)
                retry = []
                for row, qi in enumerate(todo):
                    cands = self._aggregate(scores[row], ids[row], live, top_k)
                    if len(cands) < top_k and k < index.ntotal and len(cands) < len(live.names):
                        retry.append(qi)
                    else:
                        results[qi] = cands
                todo = np.asarray(retry, dtype=np.int64)
                k = min(index.ntotal, k * 4)
        return results  # type: ignore[return-value]

    @staticmethod
    def _aggregate(scores: np.ndarray, ids: np.ndarray, live: _Live, top_k: int) -> list[Candidate]:
        valid = ids >= 0
        scores, ids = scores[valid], ids[valid]
        pos = np.searchsorted(live.tids, ids)
        pos_ok = pos < len(live.tids)
        hit = np.zeros(len(ids), bool)
        hit[pos_ok] = live.tids[pos[pos_ok]] == ids[pos_ok]  # False for ids removed since the snapshot
        best: dict[int, float] = {}
        for s, p in zip(scores[hit], pos[hit], strict=True):  # hits come best first
            owner = int(live.owners[p])
            if owner not in best:
                best[owner] = float(s)
                if len(best) == top_k:
                    break
        return [Candidate(live.names[o], min(1.0, s)) for o, s in best.items()]

    def _layout(self) -> dict[str, object]:
        index = self._index
        files = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file()}
        return {
            "index_kind": None if index is None else index.kind,
            "index_vectors": 0 if index is None else index.ntotal,
            "index_tombstones": 0 if index is None else index.ntotal - len(self._live.tids),
            "index_file_generation": self._file_gen,
            "files": files,
        }
