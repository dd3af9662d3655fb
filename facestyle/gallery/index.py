"""The FAISS side of the gallery: build, search, persist and validate the derived index.

The index is a cache of the SQLite templates, keyed by template id (``IndexIDMap2``, so ids survive
removals). Two layouts, chosen by size (numbers from ``benchmarks/gallery_search.py``, see
docs/gallery.md):

- ``flat``: exact inner-product search. Exact is best while it is fast enough, and removal is real.
- ``hnsw``: a graph index for large galleries. FAISS cannot delete from an HNSW graph, so removed
  templates stay in the graph as tombstones: the gallery drops any hit whose id is no longer in
  SQLite, over-fetches to make up for them, and rebuilds once tombstones pass a quarter of the index.

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
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

MAGIC = b"FSGALLERYIDX\n"
FORMAT_VERSION = 1

#: At or above this many templates the gallery uses HNSW; below, exact flat search. Measured on the
#: shared 2-core machine under load: flat 128-d costs ~0.04 ms per 1k vectors per query (0.37 ms at
#: 10k, 12 ms at 100k), so ~1 ms is reached near 30k; HNSW stays well under 1 ms there. See
#: docs/gallery.md.
HNSW_MIN_TEMPLATES = 30_000
#: Hysteresis: an HNSW gallery goes back to flat only below half the switch size.
FLAT_MAX_AFTER_HNSW = HNSW_MIN_TEMPLATES // 2
#: HNSW parameters (see the benchmark): graph degree, build breadth, search breadth.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 64
#: Larger graphs need a much wider search for the same recall on random 128-d vectors (benchmark,
#: genuine-probe recall@1: 0.998 at 100k with efSearch 64; at 1M 0.784 / 0.920 / 0.992 with efSearch
#: 64 / 128 / 256). From this size on, efSearch is HNSW_EF_SEARCH_WIDE.
HNSW_WIDE_FROM = 200_000
HNSW_EF_SEARCH_WIDE = 256


def ef_search_for(ntotal: int) -> int:
    """HNSW search breadth for an index of ``ntotal`` vectors."""
    return HNSW_EF_SEARCH_WIDE if ntotal >= HNSW_WIDE_FROM else HNSW_EF_SEARCH


#: Rebuild an HNSW index once this fraction of its vectors are tombstones.
MAX_TOMBSTONE_FRACTION = 0.25


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
    if current == "hnsw" and n_templates >= FLAT_MAX_AFTER_HNSW:
        return "hnsw"
    return "hnsw" if n_templates >= HNSW_MIN_TEMPLATES else "flat"


def new_index(
    kind: str, dim: int, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION
) -> faiss.Index:
    """An empty id-mapped inner-product index of ``kind`` ('flat' or 'hnsw')."""
    if kind == "flat":
        base = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = ef_construction
        base.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    return faiss.IndexIDMap2(base)


class VectorIndex:
    """An id-mapped FAISS index plus what the gallery needs to know about it."""

    def __init__(self, kind: str, dim: int, index: faiss.Index | None = None) -> None:
        self.kind = kind
        self.dim = dim
        self.index = index if index is not None else new_index(kind, dim)
        self._ids = self._read_ids()
        self.set_ef_search(HNSW_EF_SEARCH)

    def _read_ids(self) -> np.ndarray:
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        ids.sort()
        return ids

    def set_ef_search(self, ef: int) -> None:
        if self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = int(ef)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def ids(self) -> np.ndarray:
        """Sorted ids held by the index (tombstones included)."""
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
        """Remove ``ids`` from a flat index; no-op for HNSW (the caller counts them as tombstones)."""
        if self.kind != "flat" or len(ids) == 0:
            return 0
        removed = int(self.index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))))
        self._ids = np.setdiff1d(self._ids, np.asarray(ids, dtype=np.int64), assume_unique=True)
        return removed

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of shape (Q, k); missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        if self.kind == "hnsw":  # per-call parameters: no shared state touched by concurrent searches
            params = faiss.SearchParametersHNSW(efSearch=max(k, ef_search_for(self.ntotal)))
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
        if kind not in ("flat", "hnsw"):
            raise IndexInvalid(f"the index file has an unknown kind {kind!r}")
        try:
            index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError:
            raise IndexInvalid("FAISS could not read the index file") from None
        # deserialize_index already returns the most derived wrapper, which owns the C++ object: keep
        # that one (a downcast copy does not own it, and the original would free the index).
        if index.d != dim or not isinstance(index, faiss.IndexIDMap2):
            raise IndexInvalid("the index file holds an index of the wrong shape")
        stamp = Stamp(gallery_id, model, dim, int(header["generation"]), kind)
        return cls(kind, dim, index), stamp


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
