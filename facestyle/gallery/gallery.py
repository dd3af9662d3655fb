"""`Gallery`: a persistent set of named, L2-normalised face embeddings with fast 1:1 and 1:N search.

The vector-level methods (``enroll``, ``verify``, ``search``, ``identify``, ...) take embeddings. The
photo-level ones (``enroll_image``, ``verify_image``, ``identify_image(s)``: :mod:`.photos`) take paths
or arrays and need the :class:`facestyle.api.FacePipeline` given to :meth:`Gallery.open`, which also
binds the gallery to that pipeline's model, weights version and embedding size. This module imports
no torch (``facestyle gallery list`` stays fast); :func:`facestyle.gallery.faces.open_for_photos`
builds the pipeline with the gallery's own model.

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
take an exclusive lock. Scores are cosine similarities in [-1, 1]; a name with several templates
scores as its best template (max), because one good photo of a person is evidence enough and a
mean would penalise people enrolled from varied photos.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from facestyle.checks import check_threshold, check_top_k, require
from facestyle.errors import GalleryError, GalleryParameterError, ParameterError, UsageError, literal
from facestyle.gallery.adaptive import (
    DEFAULT_TARGET,
    AdaptiveThreshold,
    ImpostorEstimate,
    adaptive_threshold,
    estimate,
)
from facestyle.gallery.index import IndexInvalid, Stamp, VectorIndex, choose_kind
from facestyle.gallery.locking import ReadWriteLock, WriterLock
from facestyle.gallery.photos import PhotoMethods, PhotoPipeline
from facestyle.gallery.results import Candidate, EnrollResult, Match
from facestyle.gallery.store import IdentityInfo, Store, check_name, on_read_only_mount

log = logging.getLogger("facestyle.gallery")

DEFAULT_GALLERY = "gallery"
GALLERY_ENV = "FACESTYLE_GALLERY"
DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.faiss"
LOCK_NAME = "lock"

#: A new template this close (cosine) to another identity's is the same photo, or the same person,
#: under a second name: enroll warns, naming that identity (5-10x above the spread of genuine pairs).
LOOK_ALIKE = 0.995


#: How long a writer waits for another process's write before giving up (seconds; env overrides).
LOCK_TIMEOUT = 120.0
LOCK_TIMEOUT_ENV = "FACESTYLE_LOCK_TIMEOUT"


#: Up to this many templates the impostor estimate is exact (all pairs, brute force, well under a
#: second); above, it is taken through the index for a sample of identities.
EXACT_TEMPLATES = 5_000
#: Identities whose nearest other identity is measured above :data:`EXACT_TEMPLATES`.
SAMPLED_IDENTITIES = 2_000


def lock_timeout() -> float:
    """Seconds a write waits for the gallery's lock: ``$FACESTYLE_LOCK_TIMEOUT``, else 120."""
    text = os.environ.get(LOCK_TIMEOUT_ENV)
    if not text:
        return LOCK_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{LOCK_TIMEOUT_ENV}={text!r} is not a positive number of seconds")
    return value


def _writable(path: Path) -> bool:
    """Whether files can be created in the gallery directory (a read-only mount, or someone else's)."""
    return os.access(path, os.W_OK | os.X_OK) and not on_read_only_mount(path)


def read_only_error(path: Path, why: str = "") -> GalleryError:
    """The one message for a write to a gallery that cannot be written."""
    reason = f" ({why})" if why else " (opened read-only)"
    return GalleryError(f"{path}: read-only gallery{reason}; reads work, writes need a writable copy")


def resolve_gallery_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``path`` if given, else ``$FACESTYLE_GALLERY``, else ``./gallery``."""
    if path:
        return Path(path).expanduser()
    return Path(os.environ.get(GALLERY_ENV) or DEFAULT_GALLERY).expanduser()


def gallery_exists(path: str | os.PathLike[str] | None = None) -> bool:
    """Is there a gallery at ``path`` (resolved as in :func:`resolve_gallery_path`)?"""
    return (resolve_gallery_path(path) / DB_NAME).is_file()


def bound_model(path: str | os.PathLike[str] | None = None) -> str | None:
    """The model the gallery at ``path`` is bound to; None when there is no gallery there or nothing
    bound it yet. Reads one row: no index is loaded, no model is built."""
    db = resolve_gallery_path(path) / DB_NAME
    if not db.is_file():
        return None
    store = Store(db, read_only=True)
    try:
        return store.get_meta("model")
    finally:
        store.close()


def no_gallery_here(path: Path) -> GalleryError:
    return GalleryError(f"{path}: no gallery here (enroll someone first, or point to another gallery)")


def model_mismatch(path: Path, have: str, want: str) -> GalleryError:
    """The error for embeddings of model ``want`` offered to a gallery of model ``have``."""
    return GalleryError(
        f"{path} holds embeddings of model {have!r}, not {want!r}; scores between "
        f"models are meaningless: use another gallery, or the model {have!r}"
    )


@dataclass
class _Live:
    """In-memory map from template id to identity, mirroring SQLite at generation ``gen``."""

    gen: int = -1
    layout_gen: int = -1
    tids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    owners: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    names: dict[int, str] = field(default_factory=dict)


def unit_rows(embeddings: np.ndarray, dim: int | None) -> np.ndarray:
    """``embeddings`` as a C-contiguous (N, D) float32 array with unit rows; refuse bad input."""
    try:
        arr = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as exc:  # text, None, ragged rows
        raise UsageError(f"embeddings must be an (N, D) array of numbers ({exc})") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise UsageError(f"expected one or more embeddings, got an array of shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise GalleryError(f"embeddings have {arr.shape[1]} dimensions; this gallery holds {dim}")
    if not np.all(np.isfinite(arr)):
        raise UsageError("embeddings contain NaN or infinity")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if np.any(norms < 1e-6):
        raise UsageError("an embedding is the zero vector")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


@contextlib.contextmanager
def _single_thread_faiss(nq: int) -> Iterator[None]:
    """Search small batches on one OpenMP thread.

    On a busy 2-core machine, FAISS's OpenMP fan-out for a single query costs far more than it saves
    (measured: flat 10k, 0.37 ms with 1 thread vs 10.7 ms with 2 under load). The setting is per
    calling thread in libgomp, so concurrent searches in other threads are not affected.
    """
    if nq > 8:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class Gallery(PhotoMethods):
    """A gallery directory opened for use. Create with :meth:`Gallery.open`; close (or use ``with``)."""

    def __init__(
        self,
        path: Path,
        store: Store,
        read_only: bool,
        autosave: bool,
        default_threshold: float | None,
        on_note: Callable[[str], None] | None,
        pipeline: PhotoPipeline | None = None,
        stranger_rate: float | None = DEFAULT_TARGET,
    ) -> None:
        self.path = path
        #: The share of strangers the adaptive threshold aims to accept per probe (None: adaptation off).
        self.stranger_rate = stranger_rate
        self._estimate: tuple[int, ImpostorEstimate] | None = None  # (generation, estimate)
        #: The face pipeline of the photo-level methods (None: vectors only).
        self.pipeline = pipeline
        self.read_only = read_only
        self.autosave = autosave
        self._store = store
        self._db = threading.RLock()  # one SQLite connection, used by one thread at a time
        self._rw = ReadWriteLock()
        self._lock = WriterLock(path / LOCK_NAME, timeout=lock_timeout())
        self._on_note = on_note
        self._default_threshold = default_threshold
        self._index: VectorIndex | None = None
        self._live = _Live()
        self._file_gen = -1  # generation stamped in the index file we last read or wrote
        self._closed = False

    # ---- opening and closing --------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        pipeline: PhotoPipeline | None = None,
        model: str | None = None,
        dim: int | None = None,
        model_version: str | None = None,
        create: bool = True,
        read_only: bool = False,
        autosave: bool = True,
        default_threshold: float | None = None,
        on_note: Callable[[str], None] | None = None,
        stranger_rate: float | None = DEFAULT_TARGET,
    ) -> Gallery:
        """Open (with ``create``, make) the gallery at ``path`` (default: :func:`resolve_gallery_path`).

        ``pipeline`` (a :class:`facestyle.api.FacePipeline`) enables the photo-level methods, and its
        embedder names the model, embedding size, weights version and default threshold. Without
        one, ``model``/``dim``/``model_version`` name the embedder whose vectors this caller will store
        or search; a pipeline together with a different ``model``, ``dim`` or ``model_version`` is a
        :class:`UsageError`. A new gallery is bound to them; an existing one refuses another model or
        other weights, because similarities between embeddings of two models are meaningless.
        ``default_threshold`` is the model's threshold (default: the pipeline's model's).

        Without a threshold passed to a search, the threshold is, in this order: one stored in the
        gallery (``facestyle calibrate``, :meth:`set_threshold`), the gallery-adaptive one (aiming at
        ``stranger_rate`` of strangers accepted per probe, never below the model's;
        :mod:`facestyle.gallery.adaptive`; ``stranger_rate=None`` turns it off), the model's.
        """
        if stranger_rate is not None:
            require(
                isinstance(stranger_rate, int | float) and 0.0 < stranger_rate < 1.0,
                "{stranger_rate} must be between 0 and 1 (a share of strangers)",
                stranger_rate=stranger_rate,
            )
        if pipeline is not None:
            model, dim, model_version, default_threshold = _from_pipeline(
                pipeline, model, dim, model_version, default_threshold
            )
        gpath = resolve_gallery_path(path)
        db = gpath / DB_NAME
        if gpath.exists() and not gpath.is_dir():
            raise GalleryError(f"{gpath}: exists and is not a directory")
        if not db.exists():
            if read_only or not create:
                raise no_gallery_here(gpath)
            if not gpath.exists():
                try:
                    gpath.mkdir(mode=0o700, parents=True)
                except OSError as exc:
                    raise GalleryError(
                        f"{gpath}: cannot create the gallery directory ({exc.strerror})"
                    ) from None
        gallery = cls(gpath, None, read_only, autosave, default_threshold, on_note, pipeline, stranger_rate)  # type: ignore[arg-type]
        try:
            if read_only:
                gallery._store = Store(db, read_only=True)
            else:
                if not _writable(gpath):
                    raise read_only_error(gpath, "the storage is read-only or not ours to write")
                with gallery._lock():
                    gallery._store = Store(db)
                    gallery._remove_stale_temp_files()
            gallery._bind_model(model, dim, model_version)
            with gallery._rw.write():
                gallery._sync()
            if gallery._rebuilt and not read_only:
                gallery.flush()
        except BaseException:
            if gallery._store is not None:
                gallery._store.close()
            raise
        return gallery

    _rebuilt = False  # set when opening had to rebuild the index: write it at once for the others
    _skip_index_file = False  # set by rebuild(): build from the database, not from the index file

    def close(self) -> None:
        """Write the index if it changed, and close the database. Idempotent."""
        if self._closed:
            return
        try:
            if not self.read_only:
                self.flush()
        finally:
            self._closed = True
            with self._db:
                self._store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError(f"{self.path}: gallery is closed")

    def _note(self, message: str) -> None:
        if self._on_note is not None:
            self._on_note(message)
        else:
            log.warning(message)

    def _remove_stale_temp_files(self) -> None:
        # Only lock holders write temp files, and we hold the lock: any left over are from dead writers.
        for tmp in self.path.glob(f"{INDEX_NAME}.tmp-*"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    # ---- model binding and metadata -------------------------------------------------------------
    @property
    def model(self) -> str | None:
        with self._db:
            return self._store.get_meta("model")

    @property
    def model_version(self) -> str | None:
        with self._db:
            return self._store.get_meta("model_version")

    @property
    def dim(self) -> int | None:
        if self._dim is None:  # bound once, never changes: cache it (saves a query per search)
            with self._db:
                value = self._store.get_meta("dim")
            self._dim = None if value is None else int(value)
        return self._dim

    _dim: int | None = None

    def _bound_dim(self) -> int:
        dim = self.dim
        if dim is None:
            raise GalleryError(
                f"{self.path}: the gallery is not bound to a model; open it with pipeline= "
                "(or model= and dim=)"
            )
        return dim

    def _bind_model(self, model: str | None, dim: int | None, version: str | None) -> None:
        with self._db:
            have_model = self._store.get_meta("model")
            have_dim = self._store.get_meta("dim")
            have_version = self._store.get_meta("model_version")
        if have_model is None:
            if model is None:
                return
            if dim is None:
                raise UsageError("binding a gallery to a model needs the embedding size (dim)")
            if self.read_only:
                return
            with self._lock(), self._db, self._store.write() as conn:
                if self._store.get_meta("model") is None:  # another process may have bound it meanwhile
                    self._store.set_meta(conn, "model", model)
                    self._store.set_meta(conn, "dim", str(int(dim)))
                    self._store.set_meta(conn, "model_version", version)
            return self._bind_model(model, dim, version)
        if model is not None and model != have_model:
            raise model_mismatch(self.path, have_model, model)
        if dim is not None and have_dim is not None and int(have_dim) != int(dim):
            raise GalleryError(f"{self.path} holds {have_dim}-d embeddings, not {dim}-d")
        if version and have_version and version != have_version:
            raise GalleryError(
                f"{self.path} was enrolled with {have_model} weights {have_version}, these are {version}; "
                "re-enroll into a new gallery"
            )
        if version and not have_version and model is not None and not self.read_only:
            # Bound by a caller that did not know the weights version: record it now, so that from
            # here on other weights are refused.
            with self._lock(), self._db, self._store.write(append_only=True) as conn:
                if self._store.get_meta("model_version") is None:
                    self._store.set_meta(conn, "model_version", version)

    @property
    def threshold(self) -> float | None:
        """The threshold a search uses when none is passed (:meth:`threshold_info`), or None when
        there is none (no stored threshold and a model without a measured default)."""
        try:
            return self.threshold_info().threshold
        except UsageError:
            return None

    def model_threshold(self) -> float | None:
        """The model's measured default threshold (None for a model without one)."""
        if self._default_threshold is not None:
            return self._default_threshold
        model = self.model
        if model is None:
            return None
        try:
            from facestyle.models.registry import get_model

            return get_model(model).default_threshold
        except Exception:  # an unregistered (e.g. fine-tuned checkpoint) model has no default
            return None

    def threshold_info(self, threshold: float | None = None) -> AdaptiveThreshold:
        """The threshold a search uses and where it comes from, in order: ``threshold`` itself
        (checked: a finite cosine), a stored one (``calibrate``), the gallery-adaptive one
        (:meth:`impostor_estimate`, never below the model's), the model's. UsageError if none."""
        if threshold is not None:
            return AdaptiveThreshold(float(check_threshold(threshold)), "given", adapted=False)  # type: ignore[arg-type]
        with self._db:
            stored, source = self._store.get_meta("threshold"), self._store.get_meta("threshold_source")
        if stored is not None:
            where = source or "stored in the gallery"  # e.g. "calibrate on pairs.txt"
            return AdaptiveThreshold(float(stored), where, adapted=False)
        default = self.model_threshold()
        if default is None:
            raise UsageError(
                "no threshold: this gallery stores none and its model has no measured default; pass one"
            )
        if self.stranger_rate is None:
            return AdaptiveThreshold(float(default), "model default (adaptation off)", adapted=False)
        return adaptive_threshold(self.impostor_estimate(), float(default), self.stranger_rate)

    def impostor_estimate(self) -> ImpostorEstimate:
        """Each identity's nearest other identity (:mod:`facestyle.gallery.adaptive`), computed from
        the stored templates and kept until the gallery changes (its generation). Exact up to
        :data:`EXACT_TEMPLATES` templates; above, for a seeded sample of :data:`SAMPLED_IDENTITIES`
        identities, through the index."""
        self._check_open()
        self._refresh()
        with self._rw.read():
            live = self._live
            gen, tids, owners = live.gen, live.tids.copy(), live.owners.copy()
        if self._estimate is not None and self._estimate[0] == gen:
            return self._estimate[1]
        dim = self.dim
        if len(tids) == 0 or dim is None:
            result = ImpostorEstimate(np.zeros(0))
        elif len(tids) <= EXACT_TEMPLATES:
            with self._db:
                chunks = list(self._store.vectors(tids, dim))
            ids = np.concatenate([c[0] for c in chunks])
            vecs = np.concatenate([c[1] for c in chunks])
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            result = estimate(vecs, owners[np.searchsorted(tids, ids)])
        else:
            result = self._sampled_estimate(tids, owners, live.names, dim)
        self._estimate = (gen, result)
        return result

    def _sampled_estimate(
        self, tids: np.ndarray, owners: np.ndarray, names: dict[int, str], dim: int
    ) -> ImpostorEstimate:
        identities = np.unique(owners)
        rng = np.random.default_rng(0)
        if len(identities) > SAMPLED_IDENTITIES:
            identities = np.sort(rng.choice(identities, SAMPLED_IDENTITIES, replace=False))
        keep = np.isin(owners, identities)
        with self._db:
            chunks = list(self._store.vectors(tids[keep], dim))
        ids = np.concatenate([c[0] for c in chunks])
        vecs = np.concatenate([c[1] for c in chunks])
        own = owners[np.searchsorted(tids, ids)]
        best: dict[int, float] = {}
        for owner, cands in zip(own, self.search(vecs, top_k=2), strict=True):
            other = next((c.score for c in cands if c.name != names[int(owner)]), None)
            if other is not None:
                best[int(owner)] = max(best.get(int(owner), -1.0), other)
        return ImpostorEstimate(np.asarray(list(best.values()), dtype=np.float64))

    def set_threshold(self, value: float | None, source: str = "") -> None:
        """Store the gallery's cosine threshold (None clears it), with where it came from."""
        check_threshold(value)
        self._write(
            lambda conn: (
                self._store.set_meta(conn, "threshold", None if value is None else repr(float(value))),
                self._store.set_meta(conn, "threshold_source", source if value is not None else None),
            ),
            append_only=True,
        )

    def resolve_threshold(self, threshold: float | None) -> float:
        """``threshold`` if given (checked: a finite cosine), else the gallery's (:meth:`threshold_info`)."""
        return self.threshold_info(threshold).threshold

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
        if kind == "ivfpq":
            self._note(f"{self.path}: building an IVF-PQ index of {n:,} templates (~30 s per million)")
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
            with self._db:
                gallery_id = self._store.get_meta("gallery_id") or ""
                model = self._store.get_meta("model") or ""
            stamp = Stamp(gallery_id, model, self._index.dim, self._live.gen, self._index.kind)
            self._index.save(self.path / INDEX_NAME, stamp)
            self._file_gen = self._live.gen

    def rebuild(self) -> int:
        """Rebuild the index from SQLite and write it; returns the number of templates indexed."""
        self._check_open()
        if self.read_only:
            raise read_only_error(self.path)
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
    def _write(self, body: Callable[..., object], append_only: bool = False) -> object:
        """Run ``body(conn)`` in one SQLite transaction under both locks, then update the index.

        ``append_only`` (the body only inserts rows) lets every reader catch up by appending.
        """
        self._check_open()
        if self.read_only:
            raise read_only_error(self.path)
        with self._rw.write(), self._lock():
            self._sync()
            with self._db, self._store.write(append_only) as conn:
                result = body(conn)
            self._sync()
        if self.autosave:
            self.flush()
        return result

    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        *,
        new: bool = False,
        add: bool = False,
        image_sha256: str | None = None,
        source: str | None = None,
        detector: str | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        found_by: str | None = None,
    ) -> EnrollResult:
        """Add one or more templates (rows of ``embeddings``) for ``name``, creating it if new.

        ``new=True`` refuses a name that is already enrolled (a second person typed under the same
        name would otherwise merge into it); ``add=True`` refuses a name that is not (a typo would
        otherwise create a person). Either refusal is a :class:`GalleryParameterError`, decided in
        the same transaction as the write. The result tells whether the name was ``created``, how
        many ``templates`` it has now, and which other identities a new template is near-identical
        to (``look_alikes``).

        All rows are committed together. With ``image_sha256``, enrolling the same image for the same
        name again adds nothing (``duplicate=True``), so re-running an interrupted batch is safe.
        ``source``, ``detector``, ``boxes`` and ``found_by`` (how the face was found: ``detector``,
        ``padded`` or ``whole``) are kept with each template for ``gallery show``.
        """
        name = self.check_enroll(name, new=new, add=add)
        dim = self._bound_dim()
        vecs = unit_rows(embeddings, dim)
        if boxes is not None and len(boxes) != len(vecs):
            raise UsageError("one box per embedding")

        def body(conn: object) -> EnrollResult:
            store = self._store
            existing = store.identity_id(name)
            _check_expected(store, name, existing, new, add)
            if image_sha256 and existing is not None and store.has_image(existing, image_sha256):
                return EnrollResult(name, (), duplicate=True, templates=store.template_count(existing))
            look_alikes = self._look_alikes(vecs, name)
            now = time.time()
            ident = store.ensure_identity(conn, name, now)
            ids = tuple(
                store.add_template(
                    conn, ident, v, now, image_sha256, source, detector,
                    None if boxes is None else json.dumps([round(float(b), 2) for b in boxes[i]]),
                    found_by,
                )
                for i, v in enumerate(vecs)
            )  # fmt: skip
            return EnrollResult(
                name,
                ids,
                created=existing is None,
                templates=store.template_count(ident),
                look_alikes=look_alikes,
            )

        return self._write(body, append_only=True)  # type: ignore[return-value]

    def check_enroll(self, name: str, *, new: bool = False, add: bool = False) -> str:
        """Raise what :meth:`enroll` would for ``name`` with ``new``/``add``, before any photo is read
        (enroll checks again as it writes). Returns the normalised name."""
        if new and add:
            raise ParameterError("{new} and {add} exclude each other", new=True, add=True)
        name = check_name(name)
        self._check_open()
        with self._db:
            _check_expected(self._store, name, self._store.identity_id(name), new, add)
        return name

    def _look_alikes(self, vecs: np.ndarray, name: str) -> tuple[Candidate, ...]:
        """Identities other than ``name`` with a template above :data:`LOOK_ALIKE` cosine to a row of
        ``vecs``, best first. The caller holds the write lock, with the index in step with SQLite."""
        index, live = self._index, self._live
        if index is None or index.ntotal == 0 or len(live.tids) == 0:
            return ()
        best: dict[str, float] = {}
        todo, k = np.arange(len(vecs)), min(index.ntotal, 64)
        while len(todo):
            with _single_thread_faiss(len(todo)):
                scores, ids = index.search(vecs[todo], k)
            for row in range(len(todo)):
                for cand in self._aggregate(scores[row], ids[row], live, len(live.names)):
                    if cand.name != name and cand.score > LOOK_ALIKE:
                        best[cand.name] = max(cand.score, best.get(cand.name, -1.0))
            # a row whose k-th hit is still a look-alike may hide more behind name's own templates
            deeper = (scores[:, -1] > LOOK_ALIKE) if k < index.ntotal else np.zeros(len(todo), bool)
            todo, k = todo[deeper], min(index.ntotal, k * 4)
        return tuple(Candidate(n, s) for n, s in sorted(best.items(), key=lambda kv: -kv[1]))

    def enroll_many(self, names: Sequence[str], embeddings: np.ndarray) -> int:
        """Bulk import: one template per row of ``embeddings`` for the matching name, in ONE transaction.

        For importing existing embeddings (or building a benchmark gallery) where one fsync per person
        would dominate. All or nothing; returns the number of templates added.
        """
        checked = [check_name(n) for n in names]
        dim = self._bound_dim()
        vecs = unit_rows(embeddings, dim)
        if len(checked) != len(vecs):
            raise UsageError(f"{len(checked)} names for {len(vecs)} embeddings")

        def body(conn: object) -> int:
            now = time.time()
            idents: dict[str, int] = {}
            for name, v in zip(checked, vecs, strict=True):
                if name not in idents:
                    idents[name] = self._store.ensure_identity(conn, name, now)
                self._store.add_template(conn, idents[name], v, now)
            return len(vecs)

        return self._write(body, append_only=True)  # type: ignore[return-value]

    def remove(self, name: str) -> int:
        """Remove ``name`` and all its templates; returns how many templates went."""
        name = check_name(name)

        def body(conn: object) -> int:
            ident = self._store.identity_id(name)
            if ident is None:
                raise GalleryError(f"{name!r} is not enrolled in {self.path}")
            n = conn.execute("SELECT COUNT(*) FROM templates WHERE identity_id = ?", (ident,)).fetchone()[0]
            conn.execute("DELETE FROM templates WHERE identity_id = ?", (ident,))
            conn.execute("DELETE FROM identities WHERE id = ?", (ident,))
            return int(n)

        return self._write(body)  # type: ignore[return-value]

    def rename(self, old: str, new: str) -> None:
        """Rename identity ``old`` to ``new`` (which must not exist); templates are kept."""
        old, new = check_name(old), check_name(new)

        def body(conn: object) -> None:
            ident = self._store.identity_id(old)
            if ident is None:
                raise GalleryError(f"{old!r} is not enrolled in {self.path}")
            if old == new:
                return
            if self._store.identity_id(new) is not None:
                raise GalleryError(f"{new!r} is already enrolled; remove it first or pick another name")
            conn.execute(
                "UPDATE identities SET name = ?, updated_at = ? WHERE id = ?", (new, time.time(), ident)
            )

        self._write(body)

    # ---- reads -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._check_open()
        with self._db:
            return self._store.names()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        with self._db:
            return self._store.identity_id(check_name(name)) is not None

    def __len__(self) -> int:
        with self._db:
            return self._store.counts()[0]

    def show(self, name: str) -> IdentityInfo:
        self._check_open()
        with self._db:
            info = self._store.show(check_name(name))
        if info is None:
            raise GalleryError(f"{name!r} is not enrolled in {self.path}")
        return info

    def image_hashes(self) -> set[tuple[str, str]]:
        """(name, SHA-256 of the photo) of every template enrolled from a photo: lets a bulk
        enrollment skip the photos it already did without reading them again."""
        self._check_open()
        with self._db:
            return self._store.image_hashes()

    def template_counts(self) -> dict[str, int]:
        with self._db:
            return self._store.template_counts()

    def verify(self, name: str, embedding: np.ndarray) -> float:
        """Cosine similarity between ``embedding`` and ``name``'s best template (exact, from SQLite)."""
        self._check_open()
        name = check_name(name)
        dim = self.dim
        query = unit_rows(embedding, dim)
        if len(query) != 1:
            raise UsageError("verify takes one embedding")
        with self._db:
            ident = self._store.identity_id(name)
            if ident is None:
                raise GalleryError(f"{name!r} is not enrolled in {self.path}")
            vecs = self._store.identity_vectors(ident, dim)  # type: ignore[arg-type]
        vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        return float(np.max(vecs @ query[0]))

    def search(self, embeddings: np.ndarray, top_k: int = 5) -> list[list[Candidate]]:
        """Top ``top_k`` names per query row, each scored by its best template, best first."""
        self._check_open()
        check_top_k(top_k)
        queries = unit_rows(embeddings, self.dim)
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

    def identify(self, embeddings: np.ndarray, top_k: int = 5, threshold: float | None = None) -> list[Match]:
        """Per query row: the best name if it scores at least ``threshold`` (else None) and the candidates."""
        info = self.threshold_info(threshold)
        thr = info.threshold
        out = []
        for cands in self.search(embeddings, top_k):
            if cands and cands[0].score >= thr:
                out.append(Match(cands[0].name, cands[0].score, tuple(cands), thr, info.source))
            else:
                out.append(Match(None, cands[0].score if cands else None, tuple(cands), thr, info.source))
        return out

    def stats(self) -> dict[str, object]:
        """Counts, model, threshold, index layout and file sizes, for ``facestyle gallery stats``."""
        self._check_open()
        self._refresh()
        with self._db:
            n_id, n_t = self._store.counts()
            meta = {k: self._store.get_meta(k) for k in ("model", "model_version", "dim", "generation",
                                                         "created_at")}  # fmt: skip
        index = self._index
        try:
            info = self.threshold_info()
        except UsageError:
            info = None
        files = {p.name: p.stat().st_size for p in sorted(self.path.iterdir()) if p.is_file()}
        return {
            "path": str(self.path),
            "identities": n_id,
            "templates": n_t,
            "model": meta["model"],
            "model_version": meta["model_version"],
            "dim": None if meta["dim"] is None else int(meta["dim"]),
            "threshold": None if info is None else info.threshold,
            "threshold_source": None if info is None else info.source,
            "generation": int(meta["generation"] or 0),
            "index_kind": None if index is None else index.kind,
            "index_vectors": 0 if index is None else index.ntotal,
            "index_tombstones": 0 if index is None else index.ntotal - len(self._live.tids),
            "index_file_generation": self._file_gen,
            "files": files,
        }


def _check_expected(store: Store, name: str, existing: int | None, new: bool, add: bool) -> None:
    """``new`` wants ``name`` absent, ``add`` wants it present (``existing`` is its identity id)."""
    if new and existing is not None:
        n = store.template_count(existing)
        raise GalleryParameterError(
            f"{literal(repr(name))} is already enrolled ({n} template{'s' * (n != 1)}); "
            "{new} refuses an existing name",
            new=True,
        )
    if add and existing is None:
        raise GalleryParameterError(
            f"{literal(repr(name))} is not enrolled; {{add}} only adds to an existing name", add=True
        )


def _from_pipeline(
    pipeline: PhotoPipeline,
    model: str | None,
    dim: int | None,
    version: str | None,
    default_threshold: float | None,
) -> tuple[str, int, str | None, float | None]:
    """(model, dim, version, default threshold) of ``pipeline``'s embedder; explicit values must agree."""
    emb = pipeline.embedder
    version_of = getattr(emb, "version", "") or None
    have = {"model": emb.name, "dim": int(emb.embedding_size), "model_version": version_of}
    for param, given in (("model", model), ("dim", dim), ("model_version", version)):
        if given is not None and given != have[param]:
            raise ParameterError(
                f"{{{param}}} conflicts with the pipeline, whose embedder has {param} "
                f"{literal(repr(have[param]))}; give the pipeline alone",
                **{param: given},
            )
    if default_threshold is None and getattr(emb, "score_kind", "cosine") == "cosine":
        # a Siamese checkpoint's threshold is a probability: meaningless for the gallery's cosines
        default_threshold = emb.default_threshold
    return have["model"], have["dim"], have["model_version"], default_threshold
