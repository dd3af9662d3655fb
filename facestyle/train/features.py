"""Image files -> aligned chips -> base-model embeddings, each image detected once and cached.

Detection dominates the cost on CPU (MTCNN is about half a second per photo on two shared cores, the
embedding about 35 ms per chip), and both training and evaluation run over the same files again and
again. So the chosen face's landmarks are cached per file (keyed by path, size, mtime and detector),
and training caches the frozen backbone's embeddings of every augmented view: after the first run,
training a head on a few hundred images takes seconds.

Which face: LFW-style photos may show several people; the labelled person is the one at the centre.
The face nearest the image centre among those at least a quarter the area of the largest wins, so a
large central face is chosen over a small bystander and over a large face at the edge.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facestyle.errors import FacestyleError, UsageError
from facestyle.io.images import load_image
from facestyle.train.augment import AugmentOptions, chip_views

ProgressFn = Callable[[Iterable, int, str], Iterable]


def _no_progress(items: Iterable, total: int, label: str) -> Iterable:
    return items


def pick_central_face(boxes: np.ndarray, image_shape: tuple[int, ...]) -> int:
    """Index of the face nearest the image centre among faces >= 1/4 of the largest one's area."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    centre = np.array([image_shape[1] / 2.0, image_shape[0] / 2.0])
    mid = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    dist = np.linalg.norm(mid - centre, axis=1)
    dist[area < area.max() / 4.0] = np.inf
    return int(np.argmin(dist))


def _landmarks_of(face: Any) -> np.ndarray:
    """Five landmarks; for box-only detectors (Haar) the pipeline's box-relative estimate."""
    if face.landmarks is not None:
        return np.asarray(face.landmarks, dtype=np.float32)
    from facestyle.api import landmarks_of

    return np.asarray(landmarks_of(face), dtype=np.float32)


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cache_dir() -> Path:
    from facestyle.models.weights import facestyle_home

    return facestyle_home() / "cache"


class DetectionCache:
    """Chosen-face landmarks per image file, persisted as one small JSON file per detector."""

    def __init__(self, detector_name: str, root: Path | None = None) -> None:
        self.path = (root or cache_dir()) / f"detections-{detector_name}.json"
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.dirty = 0

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, value: dict) -> None:
        self.data[key] = value
        self.dirty += 1
        if self.dirty >= 200:  # long runs keep their progress if interrupted
            self.save()

    def save(self) -> None:
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)
        self.dirty = 0


@dataclass
class ChipResult:
    """The aligned chip of one image's chosen face, or why there is none."""

    path: Path
    chip: np.ndarray | None
    status: str  # "ok" | "no_face" | "error"
    error: str | None = None
    box: list[float] | None = None


class FaceExtractor:
    """Detect (cached), choose the central face, align to the embedder's chip, embed in batches."""

    def __init__(self, detector: Any, embedder: Any, use_cache: bool = True) -> None:
        self.detector = detector
        self.embedder = embedder
        self.cache = DetectionCache(getattr(detector, "name", type(detector).__name__)) if use_cache else None

    def chip(self, path: Path) -> ChipResult:
        try:
            image = load_image(path)
            key = _file_key(path)
            hit = self.cache.get(key) if self.cache else None
            if hit is None:
                faces = self.detector.detect(image)
                if not faces:
                    hit = {"status": "no_face"}
                else:
                    best = faces[pick_central_face(np.stack([f.box for f in faces]), image.shape)]
                    marks = _landmarks_of(best)
                    hit = {"status": "ok", "landmarks": marks.tolist(), "box": np.asarray(best.box).tolist()}
                if self.cache:
                    self.cache.put(key, hit)
            if hit["status"] != "ok":
                return ChipResult(path, None, "no_face")
            chip = self.embedder.align(image, np.asarray(hit["landmarks"], dtype=np.float32))
            return ChipResult(path, chip, "ok", box=hit["box"])
        except FacestyleError as exc:
            return ChipResult(path, None, "error", str(exc))

    def chips(self, paths: Sequence[Path], progress: ProgressFn = _no_progress) -> list[ChipResult]:
        try:
            return [self.chip(Path(p)) for p in progress(paths, len(paths), "detecting faces")]
        finally:
            if self.cache:
                self.cache.save()

    def embed_files(
        self, paths: Sequence[Path], progress: ProgressFn = _no_progress, batch: int = 32
    ) -> tuple[np.ndarray, list[ChipResult]]:
        """(N, D) embeddings (rows of failed images are NaN) and the per-image results.

        Chips are embedded in batches as detection goes, so memory stays bounded on big pair lists.
        """
        results: list[ChipResult] = []
        out = np.full((len(paths), self.embedder.embedding_size), np.nan, dtype=np.float32)
        pending: list[int] = []

        def flush() -> None:
            if pending:
                out[pending] = self.embedder.embed_chips(np.stack([results[i].chip for i in pending]))
                for i in pending:
                    results[i].chip = None  # free memory
                pending.clear()

        try:
            for i, p in enumerate(progress(paths, len(paths), "embedding faces")):
                results.append(self.chip(Path(p)))
                if results[-1].status == "ok":
                    pending.append(i)
                if len(pending) >= batch:
                    flush()
            flush()
        finally:
            if self.cache:
                self.cache.save()
        return out, results


@dataclass
class FeatureSet:
    """Frozen-backbone embeddings of every image's views: (N, V, D); view 0 is the unaugmented chip."""

    features: np.ndarray
    ok: np.ndarray  # (N,) bool: a face was found
    statuses: list[str] = field(default_factory=list)
    seconds: float = 0.0  # time spent computing (0 when loaded from the cache)
    chips_embedded: int = 0


#: Layers whose *input* can be cached instead of the embedding, so that the layer itself is trained.
TAP_LAYERS = ("fc",)


def tap_layer(embedder: Any, name: str) -> torch.nn.Linear:
    """The backbone's final linear layer ``name``; a :class:`UsageError` when the model has none."""
    module = getattr(embedder, "module", None)
    try:
        layer = module.get_submodule(name) if module is not None else None
    except AttributeError:
        layer = None
    if not isinstance(layer, torch.nn.Linear):
        raise UsageError(
            f"{getattr(embedder, 'name', '?')} has no final linear layer {name!r}: "
            "--train-last-layer needs one"
        )
    return layer


@contextlib.contextmanager
def capture_inputs(layer: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect what ``layer`` receives during the forward passes made inside the block."""
    store: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inp, _out: store.append(inp[0].detach().float().cpu()))
    try:
        yield store
    finally:
        handle.remove()


def embed_tapped(embedder: Any, chips: np.ndarray, tap: str | None) -> np.ndarray:
    """Embeddings of chips (``tap`` None), or the inputs of the backbone layer ``tap`` (N, in_features)."""
    if not tap:
        return embedder.embed_chips(chips)
    with capture_inputs(tap_layer(embedder, tap)) as store:
        embedder.embed_chips(chips)
    return torch.cat(store).numpy().astype(np.float32)


def _feature_key(
    paths: Sequence[Path], model_version: str, detector: str, views: int, seed: int, aug, tap: str | None
) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([model_version, detector, views, seed, repr(aug), tap or ""]).encode())
    for p in paths:
        h.update(_file_key(Path(p)).encode())
    return h.hexdigest()[:24]


def view_features(
    paths: Sequence[Path],
    extractor: FaceExtractor,
    views: int = 4,
    seed: int = 0,
    aug: AugmentOptions = AugmentOptions(),
    progress: ProgressFn = _no_progress,
    use_cache: bool = True,
    tap: str | None = None,
) -> FeatureSet:
    """Embeddings of ``views`` views per image (original, mirror, random crops/colours), cached on disk.

    With ``tap`` (e.g. "fc"), the input of that final backbone layer is cached instead, so the layer
    can be trained as part of the head.
    """
    import time

    emb = extractor.embedder
    key = _feature_key(
        paths, getattr(emb, "version", emb.name), extractor.detector.name, views, seed, aug, tap
    )
    dim = tap_layer(emb, tap).in_features if tap else emb.embedding_size
    file = cache_dir() / "features" / f"{key}.npz"
    if use_cache and file.is_file():
        with np.load(file, allow_pickle=False) as z:
            return FeatureSet(z["features"], z["ok"], [str(s) for s in z["statuses"]])
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    feats = np.full((len(paths), views, dim), np.nan, dtype=np.float32)
    statuses = []
    n_chips = 0
    try:
        for i, p in enumerate(progress(paths, len(paths), "embedding training views")):
            res = extractor.chip(Path(p))
            statuses.append(res.status)
            if res.status == "ok":
                feats[i] = embed_tapped(emb, chip_views(res.chip, views, rng, aug), tap)
                n_chips += views
    finally:
        if extractor.cache:
            extractor.cache.save()
    ok = np.array([s == "ok" for s in statuses], dtype=bool)
    fs = FeatureSet(feats, ok, statuses, time.perf_counter() - t0, n_chips)
    if use_cache:
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(file.stem + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, features=feats, ok=ok, statuses=np.array(statuses))
        os.replace(tmp, file)
    return fs
