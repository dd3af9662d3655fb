"""The FAISS side of the gallery: build, search, persist and validate the derived index.

The index is a cache of the SQLite templates, keyed by template id. Two layouts, chosen by size
(numbers from ``benchmarks/gallery_search.py`` and ``benchmarks/search_face_like.py``, see
docs/gallery.md):

- ``flat``: exact inner-product search (``IndexIDMap2`` over ``IndexFlatIP``). Exact is best while it
  is fast enough.
- ``ivfpq4d``: for large galleries, two stages. (1) IVF whose lists hold a product-quantised code of 4
  bits per dimension (one sub-quantiser per dimension: 64 bytes for 128-d instead of 512), scanned by
  FAISS's SIMD "fast-scan" kernels (``IndexIVFPQFastScan``): k-means lists trained on the gallery's own
  vectors at build time, a query scans the lists nearest to it. (2) The best few dozen candidates are
  re-scored exactly against the full vectors (an ``IndexIDMap2`` over a flat store), so the scores a
  user sees are exact cosines and the approximation can only cost recall, never accuracy of a score.
  Both stages store our ids and remove them natively (the coarse stage with a fix for a FAISS
  fast-scan bug: ``remove_from_fast_scan``), so removal is real in both layouts. The list
  count is chosen from the size at build time; once the gallery has grown well past that size the
  index is rebuilt (retrained).

Why these codes and this many lists: face embeddings are crowded (many strangers' templates score
within a few hundredths of the best one). The earlier ``ivfpq`` layout coded two dimensions per 4-bit
code (32 bytes) and erred by about that much: on face-like vectors (``benchmarks/search_face_like.py``)
its top-1 matched exact search for 0.76-0.78 of probes at 100k with 32 candidates re-scored, 0.88 with
64, however many lists it scanned. With a code per dimension and 64 candidates re-scored, the coarse
stage finds what IVF-Flat and 8-bit scalar quantisation (IVF-SQ8) find on every probe measured (100k
and 1M), in 0.55-0.63x SQ8's CPU time. What is left is the lists scanned: in a crowded space a
probe's true neighbour often sits in a far list, so from 1,024 lists on a fixed share of them is
scanned (3/16; fewer lists need more, see ``nprobe_for``), not the 3*sqrt(nlist) that sufficed on
random vectors.

The file on disk is ``magic + header length + JSON header + faiss bytes`` (for IVF the bytes of the
coarse index followed by those of the exact store; the header gives both lengths). The header stamps what the
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

from facestyle.threads import thread_count

MAGIC = b"FSGALLERYIDX\n"
#: 2: the large layout became ivfpq (IVF-Flat files are rebuilt); 3: it became ivfpq4d (a code per
#: dimension, more lists scanned; ivfpq files are rebuilt, flat ones too, which costs little).
FORMAT_VERSION = 3

#: The layouts; the IVF one is the only kind besides flat (its name says what its file holds).
IVF_KIND = "ivfpq4d"
KINDS = ("flat", IVF_KIND)

#: At or above this many templates the gallery uses IVF; below, exact flat search, which is perfect.
#: Measured on face-like vectors (CPU ms per single query, 4,000 probes, 1 thread): flat 0.13 at 15k,
#: 0.19 at 20k, 0.30 at 25k, 0.48 at 30k (its cost per vector grows once the vectors outgrow the
#: cache); IVF at its recall (0.995-0.998 of exact search's right answers kept) 0.13, 0.16, 0.18, 0.19.
#: So IVF stops losing at ~15k, is 1.2x faster at 20k, 1.7x at 25k and 2.5x at 30k: below 25k it
#: would save under 0.1 ms a query for the answers it loses. See docs/gallery.md.
IVF_MIN_TEMPLATES = 25_000
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
#: Lists scanned per query: the larger of ``IVF_NPROBE_PER_SQRT_NLIST * sqrt(nlist)`` and
#: ``IVF_NPROBE_FRACTION * nlist``. Because the candidates are re-scored exactly, recall is that of the
#: lists scanned (IVF-Flat's). On face-like vectors (a crowded space: a probe's true neighbour often
#: sits in a far list) the share of lists needed hardly falls as the gallery grows, unlike on random
#: vectors, where 3*sqrt(nlist) sufficed. Measured (share of exact search's right answers kept,
#: 2,000-4,000 probes): nlist 512 (20-38k) with 128-136 lists keeps 0.994-0.997 (96 kept 0.988-0.989);
#: 1024 (100k) 192 keeps 0.994; 2048 (300k) 384 keeps 0.995; 4096 (1M) 768 keeps 0.994 (512: 0.987).
#: The square-root term rules up to nlist 1024, the fixed share from there. See docs/gallery.md.
IVF_NPROBE_PER_SQRT_NLIST = 6
IVF_NPROBE_FRACTION = 3 / 16
#: Bits per product-quantiser code: 4 is what FAISS's fast-scan kernels (in-register lookup tables) take.
PQ_BITS = 4
#: Candidates the coarse stage hands to the exact re-scoring: at least this many (``Gallery.search``
#: asks for 36). With a code per dimension, PQ's score error is small enough that 64 re-scored
#: candidates hold the true neighbour whenever its list was scanned (128 found nothing more at 1M).
RERANK_MIN = 64


def nlist_for(n: int) -> int:
    """IVF list count for ``n`` vectors: the power of two nearest 4*sqrt(n), with enough training data."""
    want = 2 ** round(math.log2(max(4 * math.sqrt(max(n, 1)), 1)))
    cap = 2 ** max(0, math.floor(math.log2(max(n // IVF_MIN_POINTS_PER_LIST, 1))))
    return int(max(1, min(want, cap)))


def nprobe_for(nlist: int) -> int:
    """Lists scanned per query for an IVF index of ``nlist`` lists."""
    want = max(IVF_NPROBE_PER_SQRT_NLIST * math.sqrt(nlist), IVF_NPROBE_FRACTION * nlist)
    return int(min(nlist, max(1, math.ceil(want))))


def train_size(n: int, nlist: int) -> int:
    """How many of ``n`` vectors to train ``nlist`` lists on."""
    return min(n, max(IVF_TRAIN_MIN, IVF_MIN_POINTS_PER_LIST * nlist))


def remove_from_fast_scan(index: faiss.IndexIVFPQFastScan, selector: faiss.IDSelector) -> int:
    """``index.remove_ids(selector)``, leaving the freed code slots zeroed so later adds are not corrupted.

    FAISS (1.15) fills a removed slot with the list's last entry and shrinks the list, but leaves that
    entry's old 4-bit codes in the now unused slot at the end of the last 32-vector block. A later add
    ORs its codes into the slot (the packer assumes zeroed space), so the vector added there gets a
    garbled code and may never be found: measured, after removing 300 of 3,000 vectors, 38% of 600
    vectors added next were unfindable even with every list scanned. Zeroing the freed slots of the
    lists that shrank (at most 31 per list) restores what the packer assumes.
    """
    lists = faiss.downcast_InvertedLists(index.invlists)
    before = [lists.list_size(i) for i in range(index.nlist)]
    removed = int(index.remove_ids(selector))
    if removed:
        block = lists.n_per_block
        zero = np.zeros(lists.packer.code_size, dtype=np.uint8)
        for i, old in enumerate(before):
            new = lists.list_size(i)
            if new < old:
                codes = lists.get_codes(i)
                # slots past the last kept block were freed with it; new blocks are zeroed on growth
                for slot in range(new, min(old, -(-new // block) * block)):
                    lists.packer.pack_1_c(faiss.swig_ptr(zero), slot, codes)
    return removed


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
    if current == IVF_KIND and n_templates >= FLAT_MAX_AFTER_IVF:
        return IVF_KIND
    return IVF_KIND if n_templates >= IVF_MIN_TEMPLATES else "flat"


def new_flat_index(dim: int) -> faiss.IndexIDMap2:
    """An empty id-mapped exact inner-product store: the whole ``flat`` layout, and IVF's exact stage.

    IDMap2 keeps an id -> row map, so ``reconstruct`` works by our ids and removal renumbers safely.
    """
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def pq_subquantizers(dim: int) -> int:
    """Sub-quantisers for ``dim``: one per dimension (64 bytes of 4-bit codes for 128-d). One per two
    dimensions (the ``ivfpq`` layout) erred by as much as crowded face scores differ (module docstring)."""
    return dim


def new_ivfpq_index(dim: int, nlist: int) -> faiss.IndexIVFPQFastScan:
    """An untrained IVF-PQ fast-scan inner-product index with a 4-bit code per dimension.

    It stores our ids itself and removes by id natively (an IndexIDMap around it would break on
    removal: IVF does not renumber). Fast-scan's block lists cannot keep a hashtable direct map, so a
    removal scans the lists' ids (milliseconds at a million; removals are rare next to searches).
    """
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQFastScan(
        quantizer, dim, int(nlist), pq_subquantizers(dim), PQ_BITS, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.niter = IVF_TRAIN_ITER
    return index


def train_ivf(index: faiss.IndexIVF, vectors: np.ndarray) -> None:
    """Train the coarse quantizer and then the codebooks (k-means, FAISS's fixed seed) on ``vectors``.

    The lists' k-means (large matrix products) runs on all threads. The rest runs on one: for
    ``ivfpq4d`` that is a 16-centroid k-means per dimension on a few thousand residuals, thousands of
    tiny OpenMP regions whose fan-out on a busy 2-core machine cost 25-50 s at 5,000 vectors against
    1.4 s on one thread. FAISS skips the quantizer's training in ``index.train`` once it holds
    ``nlist`` trained centroids; the result is the same as ``index.train`` alone (checked).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index.quantizer.reset()
    faiss.Clustering(index.d, index.nlist, index.cp).train(vectors, index.quantizer)
    index.quantizer.is_trained = True
    with thread_count(faiss.omp_get_max_threads, faiss.omp_set_num_threads, 1):
        index.train(vectors)


class VectorIndex:
    """A FAISS index keyed by template id, plus what the gallery needs to know about it.

    ``index`` is what a search scans first; ``exact`` holds the full vectors by id (the same object as
    ``index`` in the flat layout) and gives exact scores and ``reconstruct``.
    """

    def __init__(
        self,
        kind: str,
        dim: int,
        index: faiss.Index | None = None,
        exact: faiss.IndexIDMap2 | None = None,
        trained_on: int = 0,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}")
        self.kind = kind
        self.dim = dim
        if kind == "flat":
            self.index = index if index is not None else new_flat_index(dim)
            self.exact = self.index
        else:
            if index is None or exact is None:
                raise ValueError(f"an {IVF_KIND} VectorIndex needs its trained index and its exact store")
            self.index, self.exact = index, exact
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
        if kind != IVF_KIND:
            raise ValueError(f"unknown index kind {kind!r}")
        parts = list(chunks)
        ids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
        vecs = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, dim), np.float32)
        n = len(ids)
        nlist = nlist_for(n)
        index = new_ivfpq_index(dim, nlist)
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(n, train_size(n, nlist), replace=False))
        train_ivf(index, vecs[pick])
        out = cls(IVF_KIND, dim, index, new_flat_index(dim), trained_on=n)
        out.add(ids, vecs)
        return out

    def needs_rebuild(self, n_live: int) -> bool:
        """Whether an index holding ``n_live`` templates should be rebuilt (layout or IVF training)."""
        if choose_kind(n_live, self.kind) != self.kind:
            return True
        return self.kind == IVF_KIND and n_live > IVF_RETRAIN_GROWTH * max(self.trained_on, 1)

    def _read_ids(self) -> np.ndarray:
        ids = faiss.vector_to_array(self.exact.id_map).astype(np.int64)
        ids.sort()
        return ids

    @property
    def ntotal(self) -> int:
        return int(self.exact.ntotal)

    @property
    def ids(self) -> np.ndarray:
        """Sorted ids held by the index."""
        return self._ids

    @property
    def nlist(self) -> int:
        """IVF list count (0 for the flat layout)."""
        return int(self.index.nlist) if self.kind == IVF_KIND else 0

    def reconstruct(self, template_id: int) -> np.ndarray:
        """The stored (unit) vector of ``template_id``."""
        return self.exact.reconstruct(int(template_id))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected (n, {self.dim}) vectors, got {vectors.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.kind == IVF_KIND:
            self.index.add_with_ids(vectors, ids)
        self.exact.add_with_ids(vectors, ids)
        self._ids = np.union1d(self._ids, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids`` (both layouts remove for real)."""
        if len(ids) == 0:
            return 0
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        # Both stages test every stored id against the selector, so a hashed batch keeps that cheap.
        selector = faiss.IDSelectorBatch(ids)
        if self.kind == IVF_KIND:
            remove_from_fast_scan(self.index, selector)
        removed = int(self.exact.remove_ids(selector))
        self._ids = np.setdiff1d(self._ids, ids, assume_unique=True)
        return removed

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` of shape (Q, k), exact inner products, best first; missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        if self.kind == "flat":
            return self.exact.search(queries, k)
        # Per-call parameters: no shared state touched by concurrent searches.
        params = faiss.SearchParametersIVF(nprobe=nprobe_for(self.index.nlist))
        k_coarse = min(max(k, RERANK_MIN), max(self.ntotal, 1))
        _, cand = self.index.search(queries, k_coarse, params=params)
        return self._rescore(queries, cand, k)

    def _rescore(self, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the coarse candidates ``cand`` (Q, K'), keeping the best ``k`` per query."""
        missing = cand < 0
        keys = np.where(missing, self._ids[0] if len(self._ids) else 0, cand)
        vecs = self.exact.reconstruct_batch(keys.ravel()).reshape(*cand.shape, self.dim)
        scores = np.matmul(vecs, queries[:, :, None])[..., 0]
        scores[missing] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rows = np.arange(len(cand))[:, None]
        top_scores, top_ids = scores[rows, order], cand[rows, order]
        top_ids[np.isneginf(top_scores)] = -1
        return top_scores, top_ids

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, path: Path, stamp: Stamp) -> None:
        """Atomically replace ``path`` with this index stamped with ``stamp`` (mode 0600)."""
        blobs = [faiss.serialize_index(self.index).tobytes()]
        if self.kind == IVF_KIND:
            blobs.append(faiss.serialize_index(self.exact).tobytes())
        payload = b"".join(blobs)
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
            "part_bytes": [len(b) for b in blobs],
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
        if kind not in KINDS:
            raise IndexInvalid(f"the index file has an unknown kind {kind!r}")
        trained_on = header.get("trained_on", 0)
        parts = header.get("part_bytes")
        if (
            not isinstance(trained_on, int)
            or (kind == IVF_KIND and trained_on < 1)
            or not isinstance(parts, list)
            or len(parts) != (1 if kind == "flat" else 2)
            or sum(parts) != len(payload)
        ):
            raise IndexInvalid("the index file header is damaged")
        # deserialize_index already returns the most derived wrapper, which owns the C++ object: keep
        # that one (a downcast copy does not own it, and the original would free the index).
        indexes = []
        offset = 0
        for size in parts:
            try:
                indexes.append(
                    faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8, count=size, offset=offset))
                )
            except RuntimeError:
                raise IndexInvalid("FAISS could not read the index file") from None
            offset += size
        expected = (faiss.IndexIDMap2,) if kind == "flat" else (faiss.IndexIVFPQFastScan, faiss.IndexIDMap2)
        if any(
            ix.d != dim or not isinstance(ix, want) or ix.metric_type != faiss.METRIC_INNER_PRODUCT
            for ix, want in zip(indexes, expected, strict=True)
        ):
            raise IndexInvalid("the index file holds an index of the wrong shape")
        # An IVF file must hold this layout's codes (a code per dimension), not the earlier ivfpq's.
        codes = indexes[0].pq if kind == IVF_KIND else None
        if codes is not None and (
            not indexes[0].is_trained
            or indexes[0].ntotal != indexes[1].ntotal
            or (codes.M, codes.nbits) != (pq_subquantizers(dim), PQ_BITS)
        ):
            raise IndexInvalid("the index file holds an index of the wrong shape")
        stamp = Stamp(gallery_id, model, dim, int(header["generation"]), kind)
        exact = indexes[1] if kind == IVF_KIND else None
        return cls(kind, dim, indexes[0], exact, trained_on=trained_on), stamp


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
