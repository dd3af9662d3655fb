"""Frozen backbones as feature extractors for heads, and a cache so each image is run through once.

Transfer learning on a small data set spends almost all its time in the backbone; the head trains in
seconds. So features are computed once per (backbone, file) and kept, in memory for the process and on
disk under ``$FACESTYLE_HOME/cache/head-features``, keyed by the file's absolute path, size and mtime (an
edited image is recomputed). Two kinds of backbone:

* face backbones (``dlib-resnet-v1``, ``facenet-vggface2``): detect the largest face, align the chip
  the embedder expects, and use its embedding. An image without a face yields no feature unless
  ``no_face="whole"``, which treats the whole image as the face box (right for data sets of tight face
  crops such as AT&T, where the detector sometimes misses a face that fills the frame);
* image backbones (``vgg19-imagenet`` and the others of :mod:`facestyle.style.backbones`): the whole
  image at 224 x 224, global-average and global-max pooled at one tap. ``vgg19-random`` has untrained
  weights: it runs, but its numbers say nothing about pretrained features, and it is flagged as such.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from facestyle.errors import FacestyleError, UsageError
from facestyle.io.files import atomic_write

FACE_BACKBONES = ("dlib-resnet-v1", "facenet-vggface2")

NoFacePolicy = Literal["skip", "whole"]


@dataclass
class FaceBackbone:
    """Largest face -> aligned chip -> embedding (L2-normalised)."""

    model: str = "dlib-resnet-v1"
    detector: str = "mtcnn"
    no_face: NoFacePolicy = "skip"
    device: str | None = None
    kind: str = "face"
    trained: bool = True
    _pipe: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.model

    @property
    def config(self) -> dict:
        return {"name": self.model, "kind": self.kind, "detector": self.detector, "no_face": self.no_face}

    @property
    def cache_id(self) -> str:
        return f"{self.model}-{self.detector}-{self.no_face}"

    def _pipeline(self):
        if self._pipe is None:
            from facestyle.api import FacePipeline

            self._pipe = FacePipeline(model=self.model, detector=self.detector, device=self.device)
        return self._pipe

    @property
    def dim(self) -> int:
        return int(self._pipeline().embedder.embedding_size)

    def chip(self, image: np.ndarray) -> np.ndarray | None:
        """The aligned chip of the largest face, or None."""
        from facestyle.api import landmarks_of
        from facestyle.detect.base import DetectedFace, sort_faces

        pipe = self._pipeline()
        faces = sort_faces(pipe.detect(image))
        if not faces:
            if self.no_face != "whole":
                return None
            h, w = image.shape[:2]
            faces = [DetectedFace(np.array([0, 0, w, h], np.float32), 0.0, None)]
        return pipe.embedder.align(image, landmarks_of(faces[0]))

    def features(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        chips = [self.chip(im) for im in images]
        found = [c for c in chips if c is not None]
        embedded = iter(self._pipeline().embedder.embed_chips(np.stack(found)) if found else [])
        return [None if c is None else next(embedded) for c in chips]


@dataclass
class ImageBackbone:
    """A torchvision-style image network: whole image -> pooled activations of one tap."""

    backbone: str = "vgg19-imagenet"
    tap: str = "relu5_4"
    size: int = 224
    device: str | None = None
    kind: str = "image"
    _net: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.backbone

    @property
    def trained(self) -> bool:
        from facestyle.style.backbones import get_backbone

        return bool(get_backbone(self.backbone).trained)

    @property
    def config(self) -> dict:
        return {"name": self.backbone, "kind": self.kind, "tap": self.tap, "size": self.size}

    @property
    def cache_id(self) -> str:
        return f"{self.backbone}-{self.tap}-{self.size}"

    def _extractor(self):
        if self._net is None:
            from facestyle.device import default_device
            from facestyle.style.backbones import build_extractor

            self._net = build_extractor(self.backbone, [self.tap], default_device(self.device)).eval()
        return self._net

    @property
    def dim(self) -> int:
        return 2 * int(self._extractor()(self._batch([np.zeros((8, 8, 3), np.uint8)]))[self.tap].shape[1])

    def _batch(self, images: list[np.ndarray]):
        import cv2
        import torch

        arr = np.stack(
            [cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_AREA) for im in images]
        )
        net = self._extractor()
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0).to(net.mean.device)

    def features(self, images: list[np.ndarray]) -> list[np.ndarray | None]:
        import torch

        with torch.inference_mode():
            act = self._extractor()(self._batch(images))[self.tap]
            pooled = torch.cat([act.mean(dim=(2, 3)), act.amax(dim=(2, 3))], dim=1)
        return list(pooled.cpu().numpy().astype(np.float32))


Backbone = FaceBackbone | ImageBackbone


def make_backbone(
    name: str, detector: str = "mtcnn", no_face: NoFacePolicy = "skip", device: str | None = None
) -> Backbone:
    """A face backbone for face-embedding models, else an image backbone of facestyle.style."""
    if name in FACE_BACKBONES:
        return FaceBackbone(model=name, detector=detector, no_face=no_face, device=device)
    from facestyle.style.backbones import get_backbone

    get_backbone(name)  # raises a one-line UsageError listing the known names
    return ImageBackbone(backbone=name, device=device)


def backbone_from_config(config: dict, device: str | None = None) -> Backbone:
    """Rebuild the backbone a head was trained on (stored in its checkpoint)."""
    if config.get("kind") == "face":
        return FaceBackbone(
            model=config["name"], detector=config["detector"], no_face=config["no_face"], device=device
        )
    if config.get("kind") == "image":
        return ImageBackbone(
            backbone=config["name"], tap=config["tap"], size=int(config["size"]), device=device
        )
    raise UsageError(f"unknown backbone description in head file: {config!r}")


# ------------------------------------------------------------------------------------------- caching

_MEMORY: dict[tuple[str, str], np.ndarray | None] = {}


def file_key(path: Path) -> str:
    """Identity of an image file's current content: absolute path, size, mtime."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cache_file(backbone: Backbone) -> Path:
    from facestyle.models.weights import facestyle_home

    return facestyle_home() / "cache" / "head-features" / f"{backbone.cache_id}.npz"


def _load_disk(path: Path) -> dict[str, np.ndarray | None]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, feats, ok = data["keys"], data["features"], data["ok"]
    except (OSError, ValueError, KeyError):
        return {}  # a corrupt cache is only a cache: recompute
    return {str(k): (f if o else None) for k, f, o in zip(keys, feats, ok, strict=True)}


def _save_disk(path: Path, entries: dict[str, np.ndarray | None], dim: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = np.array(list(entries), dtype=str)
    ok = np.array([v is not None for v in entries.values()], dtype=bool)
    feats = np.stack([v if v is not None else np.zeros(dim, np.float32) for v in entries.values()])
    atomic_write(path, lambda tmp: np.savez(tmp, keys=keys, features=feats.astype(np.float32), ok=ok), ".npz")


@dataclass
class FeatureResult:
    """Features of a list of files; ``status[i]`` is ``ok``, ``no_face`` or an error message."""

    features: np.ndarray  # (N, D) float32; rows of failed files are zeros
    ok: np.ndarray  # (N,) bool
    status: list[str]
    computed: int  # how many files actually went through the backbone (the rest came from the cache)


def extract_features(
    backbone: Backbone, paths: list[Path], use_cache: bool = True, batch: int = 16, progress=None
) -> FeatureResult:
    """Features for ``paths``, from the cache where possible; unreadable files are reported, not fatal."""
    from facestyle.io.images import load_image

    paths = [Path(p) for p in paths]
    if not paths:
        return FeatureResult(np.zeros((0, 0), np.float32), np.zeros(0, bool), [], 0)
    disk_path = cache_file(backbone)
    disk = _load_disk(disk_path) if use_cache else {}
    keys = [file_key(p) if p.is_file() else f"{p}|missing" for p in paths]
    results: dict[int, np.ndarray | None] = {}
    status = ["ok"] * len(paths)
    todo: list[int] = []
    for i, key in enumerate(keys):
        mem_key = (backbone.cache_id, key)
        if use_cache and mem_key in _MEMORY:
            results[i] = _MEMORY[mem_key]
        elif use_cache and key in disk:
            results[i] = _MEMORY[mem_key] = disk[key]
        else:
            todo.append(i)
    computed = 0
    chunks = [todo[s : s + batch] for s in range(0, len(todo), batch)]
    for chunk in progress(chunks) if progress else chunks:
        images, idx = [], []
        for i in chunk:
            try:
                images.append(load_image(paths[i]))
                idx.append(i)
            except FacestyleError as exc:
                results[i] = None
                status[i] = str(exc)
        for i, feat in zip(idx, backbone.features(images) if images else [], strict=True):
            results[i] = None if feat is None else np.asarray(feat, np.float32)
            computed += 1
            if use_cache:
                _MEMORY[(backbone.cache_id, keys[i])] = results[i]
    dims = {v.shape[0] for v in results.values() if v is not None}
    dim = dims.pop() if dims else 0
    for i in range(len(paths)):
        if results.get(i) is None and status[i] == "ok":
            status[i] = "no_face"
    if use_cache and computed:
        merged = dict(disk)
        merged.update({keys[i]: results[i] for i in todo if not keys[i].endswith("|missing")})
        if dim:
            _save_disk(disk_path, merged, dim)
    feats = np.stack(
        [results[i] if results.get(i) is not None else np.zeros(dim, np.float32) for i in range(len(paths))]
    )
    ok = np.array([results.get(i) is not None for i in range(len(paths))], dtype=bool)
    return FeatureResult(feats.astype(np.float32), ok, status, computed)


def digest_of(config: dict) -> str:
    """Short stable id of a backbone config (for file names and reports)."""
    return hashlib.sha1(repr(sorted(config.items())).encode()).hexdigest()[:10]
