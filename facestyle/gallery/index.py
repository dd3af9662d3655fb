"""The FAISS side of the gallery: build, search, persist and validate the derived index.

The index is a cache of the SQLite templates, keyed by template id. Two layouts, chosen by size
(numbers from ``benchmarks/gallery_search.py``, see docs/gallery.md):

- ``flat``: exact inner-product search (``IndexIDMap2`` over ``IndexFlatIP``). Exact is best while it
  is fast enough.
- ``ivf``: IVF-Flat for large galleries: k-means lists trained on the gallery's own vectors at build
  time, a query scans the few lists nearest to it. It stores our ids and removes them natively, so
  removal is real in both layouts. The list count is chosen from the size at build time; once the
  gallery has grown well past that size the index is rebuilt (retrained).

The file on disk is ``magic + header length + JSON header + faiss bytes``. The header stamps what the
cache was built from (gallery id, model, dimension, SQLite generation) and the SHA-256 of the FAISS
bytes, so a stale, truncated, corrupt or foreign file is recognised and rebuilt rather than trusted.
It is written to a temporary file, fsynced and renamed over the old one: readers see the old file or
the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

MAGIC = b"FSGALLERYIDX\n"
FORMAT_VERSION = 1

#: At or above this many templates the gallery uses IVF; below, exact flat search. Measured on the
#: shared 2-core machine: flat 128-d costs ~0.04-0.06 ms CPU per 1k vectors per query, so ~1 ms is
#: reached near 17-25k depending on load. See docs/gallery.md.
IVF_MIN_TEMPLATES = 20_000
#: Hysteresis: an IVF gallery goes back to flat only below half the switch size.
FLAT_MAX_AFTER_IVF = IVF_MIN_TEMPLATES // 2
#: k-means wants at least this many training vectors per list (FAISS warns below 39).
IVF_MIN_POINTS_PER_LIST = 39
#: Train on at least this many vectors (all of them in smaller galleries).
IVF_TRAIN_MIN = 100_000
#: k-means iterations when training the coarse quantizer.
IVF_TRAIN_ITER = 10
#: Retrain (rebuild) once the gallery holds this many times the vectors the lists were trained for:
#: the list count then no longer fits the size, and lists fill unevenly.
IVF_RETRAIN_GROWTH = 4
#: Lists scanned per query: this many times sqrt(nlist). Genuine-probe recall@1 at a fixed scanned
#: fraction rises with the list count, so the fraction can shrink as nlist grows (benchmark, 1 thread:
#: nlist 1024 needs 64 lists for 0.99-0.997 at 100k-1M; nlist 4096 at 1M gives 0.989 at 128 and 0.998
#: at 256). 3 * sqrt(nlist) gives 96 and 192 there. See docs/gallery.md.
IVF_NPROBE_PER_SQRT_NLIST = 3


def nlist_for(n: int) -> int:
    """IVF list count for ``n`` vectors: the power of two nearest 4*sqrt(n), with enough training data."""
    want = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1)))
    cap = 2 ** max(0, math.floor(math.log2(max(n // IVF_MIN_POINTS_PER_LIST, 1))))
    return int(max(1, min(want, cap)))


def nprobe_for(nlist: int) -> int:
    """Lists scanned per query for an IVF index of ``nlist`` lists."""
    return int(min(nlist, math.ceil(IVF_NPROBE_PER_SQRT_NLIST * math.sqrt(nlist))))


def train_size(n: int, nlist: int) -> int:
    """How many of ``n`` vectors to train ``nlist`` lists on."""
    return min(n, max(IVF_TRAIN_MIN, IVF_MIN_POINTS_PER_LIST * nlist))


class IndexInvalid(Exception):
    """The index file cannot be used; the message says why (for the 'rebuilding' note)."""


@dataclass(frozen=True)
class Stamp:
    """What an index file claims to have been built from."""

    gallery_id: str
    model: str
    dim: int
    generation: int
    kind: str


def choose_kind(n_templates: int, current: str | None = None) -> str:
    """Index layout for ``n_templates``, with hysteresis around the switch size."""
    if current == "ivf" and n_templates >= FLAT_MAX_AFTER_IVF:
        return "ivf"
    return "ivf" if n_templates >= IVF_MIN_TEMPLATES else "flat"


def new_index(kind: str, dim: int) -> faiss.Index:
    """An empty id-mapped flat inner-product index (IVF indexes come from :func:`new_ivf_index`)."""
    if kind != "flat":
        raise ValueError(f"unknown index kind {kind!r}")
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def new_ivf_index(dim: int, nlist: int) -> faiss.IndexIVFFlat:
    """An untrained IVF-Flat inner-product index.

    It stores our ids itself and removes by id natively (an IndexIDMap around it would break on
    removal: IVF does not renumber). The hashtable direct map makes ``reconstruct`` (the gallery's
    spot check) work by id and survives removals.
    """
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, int(nlist), faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = IVF_TRAIN_ITER
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def train_ivf(index: faiss.IndexIVFFlat, vectors: np.ndarray) -> None:
    """Train the coarse quantizer (k-means, FAISS's fixed seed) on ``vectors``."""
    index.train(np.ascontiguousarray(vectors, dtype=np.float32))


class VectorIndex:
    """A FAISS index keyed by template id, plus what the gallery needs to know about it."""

    def __init__(self, kind: str, dim: int, index: faiss.Index | None = None, trained_on: int = 0) -> None:
        self.kind = kind
        self.dim = dim
        self.index = index if index is not None else new_index(kind, dim)
        #: IVF: how many vectors the lists were trained for (drives the retrain-on-growth rule).
        self.trained_on = int(trained_on)
        self._ids = self._read_ids()

    @classmethod
    def build(cls, kind: str, dim: int, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> VectorIndex:
        """A new index of ``kind`` holding all ``(ids, vectors)`` chunks; IVF is trained on them first."""
        if kind == "flat":
            out = cls("flat", dim)
            for ids, vecs in chunks:
                out.add(ids, vecs)
            return out
        if kind != "ivf":
            raise ValueError(f"unknown index kind {kind!r}")
        parts = list(chunks)
        ids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
        vecs = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, dim), np.float32)
        n = len(ids)
        nlist = nlist_for(n)
        index = new_ivf_index(dim, nlist)
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(n, train_size(n, nlist), replace=False))
        train_ivf(index, vecs[pick])
        out = cls("ivf", dim, index, trained_on=n)
        out.add(ids, vecs)
        return out

    def needs_rebuild(self, n_live: int) -> bool:
        """Whether an index holding ``n_live`` templates should be rebuilt (layout or IVF training)."""
        if choose_kind(n_live, self.kind) != self.kind:
            return True
        return self.kind == "ivf" and n_live > IVF_RETRAIN_GROWTH * max(self.trained_on, 1)

    def _read_ids(self) -> np.ndarray:
        if self.kind == "ivf":
            lists = self.index.invlists
            parts = [
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(self.index.nlist)
                if lists.list_size(i)
            ]
            ids = np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)
        else:
            ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ids.sort()
        return ids

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def ids(self) -> np.ndarray:
        """Sorted ids held by the index."""
        return self._ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self._ids = np.union1d(self._ids, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (both layouts remove for real)."""
        if len(ids) == 0:
            return 0
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        # IVF's hashtable direct map finds each id directly, and accepts only an explicit array of ids;
        # the flat id map tests every stored id against the selector, so a hashed batch is fast there.
        sel = (
            faiss.IDSelectorArray(len(ids), faiss.swig_ptr(ids))
            if self.kind == "ivf"
            else faiss.IDSelectorBatch(ids)
        )
        removed = int(self.index.remove_ids(sel))
        self._ids = np.setdiff1d(self._ids, np.asarray(ids, dtype=np.int64), assume_unique=True)
        return removed

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of shape (Q, k); missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        if self.kind == "ivf":  # per-call parameters: no shared state touched by concurrent searches
            params = faiss.SearchParametersIVF(nprobe=nprobe_for(self.index.nlist))
            return self.index.search(queries, k, params=params)
        return self.index.search(queries, k)

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, path: Path, stamp: Stamp) -> None:
        """Atomically replace ``path`` with this index stamped with ``stamp`` (mode 0600)."""
        payload = faiss.serialize_index(self.index).tobytes()
        header = {
            "format": FORMAT_VERSION,
            "gallery_id": stamp.gallery_id,
            "model": stamp.model,
            "dim": stamp.dim,
            "generation": stamp.generation,
            "kind": self.kind,
            "ntotal": self.ntotal,
            "trained_on": self.trained_on,
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
        head = json.dumps(header, sort_keys=True).encode()
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC + struct.pack("<I", len(head)) + head)
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path, gallery_id: str, model: str, dim: int) -> tuple[VectorIndex, Stamp]:
        """Read and check ``path``; raise :class:`IndexInvalid` saying why it cannot be used."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IndexInvalid("no index file") from None
        except OSError as exc:
            raise IndexInvalid(f"cannot read the index file ({exc.strerror})") from None
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            raise IndexInvalid("the index file is not a facestyle gallery index")
        (head_len,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        try:
            header = json.loads(data[start : start + head_len])
        except ValueError:
            raise IndexInvalid("the index file header is damaged") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
            raise IndexInvalid("the index file has an unknown format version")
        if header.get("gallery_id") != gallery_id:
            raise IndexInvalid("the index file belongs to another gallery")
        if header.get("model") != model or header.get("dim") != dim:
            raise IndexInvalid(f"the index file was built for model {header.get('model')!r}, not {model!r}")
        payload = data[start + head_len :]
        if len(payload) != header.get("payload_bytes") or (
            hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")
        ):
            raise IndexInvalid("the index file is truncated or corrupt (checksum mismatch)")
        kind = header.get("kind")
        if kind not in ("flat", "ivf"):
            raise IndexInvalid(f"the index file has an unknown kind {kind!r}")
        trained_on = header.get("trained_on", 0)
        if not isinstance(trained_on, int) or (kind == "ivf" and trained_on < 1):
            raise IndexInvalid("the index file header is damaged")
        try:
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError:
            raise IndexInvalid("FAISS could not read the index file") from None
        # deserialize_index already returns the most derived wrapper, which owns the C++ object: keep
        # that one (a downcast copy does not own it, and the original would free the index).
        expected = faiss.IndexIDMap2 if kind == "flat" else faiss.IndexIVFFlat
        if (
            index.d != dim
            or not isinstance(index, expected)
            or index.metric_type != faiss.METRIC_INNER_PRODUCT
        ):
            raise IndexInvalid("the index file holds an index of the wrong shape")
        if kind == "ivf" and (not index.is_trained or index.direct_map.type != faiss.DirectMap.Hashtable):
            raise IndexInvalid("the index file holds an index of the wrong shape")
        stamp = Stamp(gallery_id, model, dim, int(header["generation"]), kind)
        return cls(kind, dim, index, trained_on=trained_on), stamp


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
