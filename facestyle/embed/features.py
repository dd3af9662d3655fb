"""The feature service: image files -> chosen face -> embedding (or whole image -> backbone features).

Training, evaluation, calibration, classification heads and the CLI's embedding matrix all need "one
vector per file", computed once and reused. This module is the one place that does it:

* :class:`FaceFeatures`: find faces (the detector of your choice under the face-finding policy of
  :mod:`facestyle.detect.finding`: ``crop`` is ``detect``, ``auto`` or ``whole``), pick one face per photo
  (:data:`~facestyle.detect.faces.FaceChoice`: ``largest`` or ``central``), align it to the embedder's
  chip and embed it; or, for training, embed several augmented views of that chip.
* :class:`ImageFeatures`: a whole image through a registered backbone, pooled at one tap (for
  classifying things that are not faces).

Both return a :class:`FeatureTable`: one row per file, in order. A file that fails keeps its row, filled
with NaN (so using it by mistake poisons every result instead of passing as a zero vector), and says
why in ``status`` (``ok``, ``no_face`` or ``error``) and ``errors``.

Caching: each file's result is stored under ``$FACESTYLE_HOME/cache/features``, keyed by the file
(absolute path, size, mtime: :func:`facestyle.io.files.file_key`) and by everything that changes the
numbers: the model and its weights version, the detector, the face choice and the face-finding
policy (the crop mode and the version of its measured constants; plus, for training views, their
number, seed, augmentation and layer). The chosen face's landmarks and how it was found are stored
too, so augmented views of a photo never run detection again. Files that could not be read
are not cached. Training views are drawn from one random stream over the list of files, so they are
cached per list (see :meth:`FaceFeatures.views`). Cache files are written atomically (owner-only:
embeddings of people are biometric data) and merged with what another process may have written
meanwhile; a corrupt cache file is only a cache, and is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from facestyle.align.landmarks import landmarks_of
from facestyle.detect.faces import Detector, FaceChoice, choose_face
from facestyle.detect.finding import DEFAULT_CROP, POLICY_VERSION, CropMode, FaceFinder, check_crop
from facestyle.embed.embedder import Embedder, embed_tapped
from facestyle.errors import FacestyleError, ParameterError
from facestyle.io.files import atomic_write, file_key
from facestyle.io.images import ImageLike, as_rgb
from facestyle.io.progress import Progress, no_progress

#: What to do with a photo in which no face is found. Kept as an alias (issue 20): ``skip`` leaves it
#: out, and ``whole`` now means the face-finding policy's ``auto`` (a padded re-detection, then O-Net's
#: landmarks on the whole image where it plausibly is a face crop). It used to place the landmarks by
#: fixed box proportions, which misaligned the chips; use ``crop`` instead.
NoFacePolicy = Literal["skip", "whole"]
NO_FACE_POLICIES = ("skip", "whole")

Status = Literal["ok", "no_face", "error"]


def cache_root() -> Path:
    """``$FACESTYLE_HOME/cache/features``."""
    from facestyle.models.weights import facestyle_home

    return facestyle_home() / "cache" / "features"


@dataclass
class FeatureTable:
    """One row per input file, in order; failed rows are NaN and say why."""

    paths: list[str]  # the file of each row, or "<array i>" for an image passed as an array
    values: np.ndarray  # (N, D) float32, or (N, V, D) for training views
    status: list[str]  # "ok" | "no_face" | "error"
    errors: list[str | None]  # the error message of "error" rows
    boxes: np.ndarray  # (N, 4) the chosen face's box (NaN without one; the whole image for images)
    computed: int = 0  # files that went through the network (the others came from the cache)
    seconds: float = 0.0
    found_by: list[str | None] | None = None  # how each row's face was found (None: no face, or n/a)

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: the rows that hold a real vector."""
        return np.array([s == "ok" for s in self.status], dtype=bool)

    @property
    def dim(self) -> int:
        return int(self.values.shape[-1])

    def reason(self, i: int) -> str:
        """Why row ``i`` failed: ``no_face`` or the error message."""
        return self.errors[i] or self.status[i]


# ------------------------------------------------------------------------------------------ cache store


@dataclass
class _Entry:
    status: str
    box: np.ndarray  # (4,)
    landmarks: np.ndarray  # (5, 2)
    value: np.ndarray | None  # (D,) or (V, D)
    found_by: str = ""  # detector | padded | whole ("" without a face)


class _Store:
    """Per-file entries of one cache key, in memory and in one ``.npz`` file (no pickles)."""

    def __init__(self, key: str, enabled: bool) -> None:
        self.key = key
        self.enabled = enabled
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.path = cache_root() / f"{digest}.npz"
        self.entries: dict[str, _Entry] = self._read() if enabled else {}
        self.dirty = False

    def _read(self) -> dict[str, _Entry]:
        if not self.path.is_file():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as z:
                if str(z["key"]) != self.key:
                    return {}
                files, status, boxes, marks = z["files"], z["status"], z["boxes"], z["landmarks"]
                values = z["values"]
                found = z["found_by"] if "found_by" in z.files else np.full(len(files), "", dtype=str)
        except (OSError, ValueError, KeyError):
            return {}
        return {
            str(f): _Entry(str(s), b, m, v if s == "ok" else None, str(fb))
            for f, s, b, m, v, fb in zip(files, status, boxes, marks, values, found, strict=True)
        }

    def get(self, fkey: str) -> _Entry | None:
        return self.entries.get(fkey)

    def put(self, fkey: str, entry: _Entry) -> None:
        self.entries[fkey] = entry
        self.dirty = self.enabled

    def save(self) -> None:
        """Merge with the file as it is now (another process may have added to it) and write it."""
        if not self.dirty:
            return
        merged = {**self._read(), **self.entries}
        shapes = {e.value.shape for e in merged.values() if e.value is not None}
        if len(shapes) != 1:  # nothing computed, or entries of another shape: keep only ours
            merged = self.entries
            shapes = {e.value.shape for e in merged.values() if e.value is not None} or {(0,)}
        shape = shapes.pop()
        files = list(merged)
        values = np.stack(
            [e.value if e.value is not None else np.full(shape, np.nan, np.float32) for e in merged.values()]
        ).astype(np.float32)
        arrays = {
            "key": np.array(self.key),
            "files": np.array(files, dtype=str),
            "status": np.array([e.status for e in merged.values()], dtype=str),
            "boxes": np.stack([e.box for e in merged.values()]).astype(np.float32),
            "landmarks": np.stack([e.landmarks for e in merged.values()]).astype(np.float32),
            "values": values,
            "found_by": np.array([e.found_by for e in merged.values()], dtype=str),
        }
        # An unwritable cache only costs the next run its time.
        with contextlib.suppress(OSError):
            # Embeddings of people's photos are biometric data: owner-only, like a gallery.
            atomic_write(self.path, lambda tmp: np.savez(tmp, **arrays), ".npz", mode=0o600)
        self.dirty = False


def _identify(item: ImageLike, label: str) -> tuple[str, str | None]:
    """(label, cache key) of an image: a file's path and :func:`file_key` (None when the file cannot
    be read: loading it then says why), or ``label`` and no key for an array (never cached)."""
    if isinstance(item, np.ndarray):
        return label, None
    try:
        return str(item), file_key(item)
    except OSError:
        return str(item), None


_NAN_BOX = np.full(4, np.nan, np.float32)
_NAN_MARKS = np.full((5, 2), np.nan, np.float32)


# ------------------------------------------------------------------------------------------ faces


@dataclass
class ChipResult:
    """The aligned chip of one image's chosen face, or why there is none (``path``: the file, or a
    label for an array)."""

    path: str
    chip: np.ndarray | None
    status: str
    error: str | None = None
    box: np.ndarray = field(default_factory=lambda: _NAN_BOX.copy())


class FaceFeatures:
    """Files -> chosen face -> embedding, with the cache described in the module docstring.

    ``face`` picks the face of a photo with several (``largest`` or ``central``); ``crop`` is the
    face-finding mode (:data:`~facestyle.detect.finding.CROP_MODES`: ``detect``, ``auto`` (default)
    or ``whole``); a photo where none is found is a no_face row. ``no_face="whole"`` is the old name of
    ``crop="auto"`` and is kept as an alias (it no longer places landmarks by box proportions).
    ``cache=False`` computes everything and writes nothing.
    """

    def __init__(
        self,
        embedder: Embedder,
        detector: Detector,
        *,
        face: FaceChoice = "largest",
        crop: CropMode = DEFAULT_CROP,
        no_face: NoFacePolicy = "skip",
        cache: bool = True,
    ) -> None:
        if no_face not in NO_FACE_POLICIES:
            raise ParameterError("{no_face} is not a policy; use skip or whole", no_face=no_face)
        check_crop(crop)
        if no_face == "whole" and crop == "detect":
            raise ParameterError(
                "{no_face} means {crop}; it cannot be combined with crop='detect'",
                no_face=no_face,
                crop="auto",
            )
        choose_face([], (1, 1), face)  # validates the choice
        self.embedder = embedder
        self.finder = face_finder(detector, crop)
        self.detector = self.finder.detector
        self.face = face
        self.crop = crop
        self.no_face = no_face
        self.cache = cache
        policy = "" if crop == "detect" else f"|{POLICY_VERSION}"
        self.key = (
            f"faces|{embedder.version or embedder.name}|{self.detector.name}|{face}|crop={crop}{policy}"
        )
        self._store = _Store(self.key, cache)

    # -- one image ---------------------------------------------------------------------------------
    def _locate(self, image: np.ndarray, fkey: str | None) -> _Entry:
        hit = self._store.get(fkey) if fkey else None
        if hit is not None:
            return hit
        face = choose_face(self.finder.detect(image), image.shape, self.face)
        if face is None:
            entry = _Entry("no_face", _NAN_BOX, _NAN_MARKS, None)
        else:
            marks = landmarks_of(face).astype(np.float32)
            entry = _Entry("ok", np.asarray(face.box, np.float32), marks, None, face.found_by)
        if fkey:
            self._store.put(fkey, entry)
        return entry

    def chip(self, item: ImageLike, label: str = "image") -> ChipResult:
        """The aligned chip of the chosen face of a file or array (a file's detection is cached)."""
        label, fkey = _identify(item, label)
        try:
            image = as_rgb(item, label)[0]
            entry = self._locate(image, fkey)
        except FacestyleError as exc:
            return ChipResult(label, None, "error", str(exc))
        if entry.status != "ok":
            return ChipResult(label, None, entry.status)
        return ChipResult(label, self.embedder.align(image, entry.landmarks), "ok", box=entry.box)

    def chips(self, items: Sequence[ImageLike], progress: Progress = no_progress) -> list[ChipResult]:
        try:
            return [
                self.chip(x, f"<array {i}>")
                for i, x in enumerate(progress(list(items), len(items), "detecting faces"))
            ]
        finally:
            self._store.save()

    # -- many images -------------------------------------------------------------------------------
    def embed(
        self, items: Sequence[ImageLike], progress: Progress = no_progress, batch: int = 32
    ) -> FeatureTable:
        """``(N, D)`` embeddings of each image's chosen face (NaN rows where there is none).

        ``items`` are paths (cached) or ``(H, W, 3)`` uint8 arrays (computed every time).
        """
        t0 = time.perf_counter()
        items = list(items)
        n, dim = len(items), self.embedder.embedding_size
        labels = [_identify(x, f"<array {i}>")[0] for i, x in enumerate(items)]
        table = FeatureTable(
            labels,
            np.full((n, dim), np.nan, np.float32),
            ["ok"] * n,
            [None] * n,
            np.full((n, 4), np.nan, np.float32),
            found_by=[None] * n,
        )
        pending: list[tuple[int, str | None, _Entry, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            vectors = self.embedder.embed_chips(np.stack([c for *_, c in pending]))
            for (i, fkey, entry, _), v in zip(pending, vectors, strict=True):
                table.values[i] = v
                if fkey:
                    self._store.put(
                        fkey, _Entry("ok", entry.box, entry.landmarks, v.astype(np.float32), entry.found_by)
                    )
            table.computed += len(pending)
            pending.clear()

        try:
            for i, item in enumerate(progress(items, n, "embedding faces")):
                self._embed_one(i, item, table, pending)
                if len(pending) >= batch:
                    flush()
            flush()
        finally:
            self._store.save()
        table.seconds = time.perf_counter() - t0
        return table

    def _embed_one(self, i: int, item: ImageLike, table: FeatureTable, pending: list) -> None:
        label, fkey = _identify(item, table.paths[i])
        try:
            hit = self._store.get(fkey) if fkey else None
            if hit is not None and (hit.status != "ok" or hit.value is not None):
                table.status[i], table.boxes[i] = hit.status, hit.box
                table.found_by[i] = hit.found_by or None
                if hit.value is not None:
                    table.values[i] = hit.value
                return
            image = as_rgb(item, label)[0]
            entry = self._locate(image, fkey)
        except FacestyleError as exc:
            table.status[i], table.errors[i] = "error", str(exc)
            return
        table.status[i], table.boxes[i] = entry.status, entry.box
        table.found_by[i] = entry.found_by or None
        if entry.status == "ok":
            pending.append((i, fkey, entry, self.embedder.align(image, entry.landmarks)))

    def views(
        self,
        paths: Sequence[str | Path],
        make_views: Callable[[np.ndarray, np.random.Generator], np.ndarray],
        *,
        n_views: int,
        variant: str,
        seed: int = 0,
        tap: str | None = None,
        progress: Progress = no_progress,
    ) -> FeatureTable:
        """``(N, V, D)`` embeddings of ``n_views`` views of each file's chosen chip, for training.

        ``make_views(chip, rng)`` returns the ``(V, S, S, 3)`` views (view 0 the chip itself);
        ``variant`` names everything that shapes them (augmentation settings) for the cache key. With
        ``tap`` the inputs of that final network layer are returned instead of embeddings.

        One random stream (``seed``) runs over the files in order, so a run is reproduced by the same
        list of files; the table is therefore cached as a whole, keyed by every file (in order) and
        the options. Detection is still served from the per-file cache.
        """
        t0 = time.perf_counter()
        paths = [Path(p) for p in paths]
        key = f"{self.key}|views={n_views}|seed={seed}|tap={tap or ''}|{variant}|" + _list_digest(paths)
        cached = _read_table(key) if self.cache else None
        if cached is not None:
            return cached
        rng = np.random.default_rng(seed)
        n = len(paths)
        status: list[str] = []
        errors: list[str | None] = []
        boxes = np.full((n, 4), np.nan, np.float32)
        rows: list[np.ndarray | None] = []
        try:
            for i, path in enumerate(progress(paths, n, "embedding training views")):
                res = self.chip(path, str(path))
                status.append(res.status)
                errors.append(res.error)
                boxes[i] = res.box
                ok = res.status == "ok"
                rows.append(embed_tapped(self.embedder, make_views(res.chip, rng), tap) if ok else None)
        finally:
            self._store.save()
        shape = next((r.shape for r in rows if r is not None), (n_views, self.embedder.embedding_size))
        values = np.full((n, *shape), np.nan, np.float32)
        for i, r in enumerate(rows):
            if r is not None:
                values[i] = r
        table = FeatureTable(
            [str(p) for p in paths], values, status, errors, boxes, sum(r is not None for r in rows)
        )
        table.seconds = time.perf_counter() - t0
        if self.cache and "error" not in status:  # a table with unreadable files is not worth keeping
            _write_table(key, table)
        return table


def face_finder(detector: Detector, crop: CropMode = DEFAULT_CROP, device: object = None) -> FaceFinder:
    """``detector`` under the face-finding policy ``crop`` (a :class:`FaceFinder` is re-wrapped with
    the new mode). ``auto`` and ``whole`` need MTCNN's O-Net: an MTCNN detector's own, else the
    registry's ``mtcnn`` entry is loaded for it."""
    check_crop(crop)
    if isinstance(detector, FaceFinder):
        if detector.crop == crop:
            return detector
        detector, onet = detector.detector, detector.onet
    else:
        onet = getattr(detector, "onet", None)
    if onet is None and crop != "detect":
        from facestyle.models.builders import mtcnn_nets
        from facestyle.models.registry import MTCNN

        onet = mtcnn_nets(MTCNN, device or getattr(detector, "device", None))[2]
    return FaceFinder(detector, onet, crop)


def _list_digest(paths: Sequence[Path]) -> str:
    """Digest of the files of a list, in order (each by :func:`file_key`; missing files by path)."""
    h = hashlib.sha256()
    for p in paths:
        try:
            h.update(file_key(p).encode())
        except OSError:
            h.update(f"{p}|unreadable".encode())
    return h.hexdigest()


def _table_path(key: str) -> Path:
    return cache_root() / f"views-{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _read_table(key: str) -> FeatureTable | None:
    """A whole cached views table, or None (absent, corrupt or another key)."""
    path = _table_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return FeatureTable(
                [str(p) for p in z["paths"]],
                z["values"],
                [str(s) for s in z["status"]],
                [None] * len(z["status"]),
                z["boxes"],
            )
    except (OSError, ValueError, KeyError):
        return None


def _write_table(key: str, table: FeatureTable) -> None:
    arrays = {
        "key": np.array(key),
        "paths": np.array(table.paths, dtype=str),
        "values": table.values.astype(np.float32),
        "status": np.array(table.status, dtype=str),
        "boxes": table.boxes.astype(np.float32),
    }
    with contextlib.suppress(OSError):  # an unwritable cache only costs the next run its time
        atomic_write(_table_path(key), lambda tmp: np.savez(tmp, **arrays), ".npz", mode=0o600)


# ------------------------------------------------------------------------------------------ whole images


class ImageFeatures:
    """Whole images through a registered backbone: global average and max pooling at one tap.

    The image is resized to ``size`` x ``size`` (the backbone's classification input); the feature is
    the concatenation of the mean and the max of the tap's activations over space (``2 * channels``).
    """

    def __init__(
        self,
        backbone: str,
        *,
        tap: str | None = None,
        size: int | None = None,
        device: object = None,
        cache: bool = True,
    ) -> None:
        from facestyle.models.registry import get_model

        self.spec = get_model(backbone)
        self.name = backbone
        self.tap = tap or self.spec.feature_tap or (self.spec.taps[-1] if self.spec.taps else "")
        self.size = int(size or self.spec.feature_size or self.spec.input_size or 224)
        self.device = device
        self.trained = self.spec.trained
        weights = self.spec.files[0].sha256[:12] if self.spec.files else "untrained"
        self.key = f"image|{backbone}@{weights}|{self.tap}|{self.size}"
        self._store = _Store(self.key, cache)
        self._net = None

    def _extractor(self):
        if self._net is None:
            from facestyle.models.registry import backbone

            self._net = backbone(self.name, [self.tap], self.device).eval()
        return self._net

    def _features(self, images: list[np.ndarray]) -> np.ndarray:
        import cv2
        import torch

        net = self._extractor()
        arr = np.stack(
            [cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_AREA) for im in images]
        )
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0).to(net.device)
        with torch.inference_mode():
            act = net(x)[self.tap]
            pooled = torch.cat([act.mean(dim=(2, 3)), act.amax(dim=(2, 3))], dim=1)
        return pooled.float().cpu().numpy()

    def embed(
        self, items: Sequence[ImageLike], progress: Progress = no_progress, batch: int = 16
    ) -> FeatureTable:
        """``(N, 2C)`` pooled features per image (NaN rows for files that cannot be read); ``items``
        are paths (cached) or arrays (computed every time)."""
        t0 = time.perf_counter()
        items = list(items)
        n = len(items)
        labels = [_identify(x, f"<array {i}>")[0] for i, x in enumerate(items)]
        rows: list[np.ndarray | None] = [None] * n
        status: list[str] = ["ok"] * n
        errors: list[str | None] = [None] * n
        pending: list[tuple[int, str | None, np.ndarray]] = []
        computed = 0

        def flush() -> None:
            nonlocal computed
            if pending:
                for (i, fkey, _), v in zip(pending, self._features([im for *_, im in pending]), strict=True):
                    rows[i] = v
                    if fkey:
                        self._store.put(fkey, _Entry("ok", _NAN_BOX, _NAN_MARKS, v))
                computed += len(pending)
                pending.clear()

        try:
            for i, item in enumerate(progress(items, n, "image features")):
                label, fkey = _identify(item, labels[i])
                hit = self._store.get(fkey) if fkey else None
                if hit is not None and hit.value is not None:
                    rows[i] = hit.value
                    continue
                try:
                    pending.append((i, fkey, as_rgb(item, label)[0]))
                except FacestyleError as exc:
                    status[i], errors[i] = "error", str(exc)
                if len(pending) >= batch:
                    flush()
            flush()
        finally:
            self._store.save()
        dim = next((r.shape[0] for r in rows if r is not None), 0)
        values = np.full((n, dim), np.nan, np.float32)
        for i, r in enumerate(rows):
            if r is not None:
                values[i] = r
        boxes = np.full((n, 4), np.nan, np.float32)
        return FeatureTable(labels, values, status, errors, boxes, computed, time.perf_counter() - t0)
