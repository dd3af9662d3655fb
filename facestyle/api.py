"""The public face API: plain functions for the common calls, one object where state is real.

>>> from facestyle import FacePipeline, compare
>>> pipe = FacePipeline()                        # MTCNN + dlib ResNet (128-d), CPU or CUDA
>>> faces = pipe.faces("photo.jpg")              # list[Face]: box, score, landmarks, embedding
>>> result = compare("a.jpg", "b.jpg")           # Comparison(similarity, threshold, same, ...)

Images are paths or ``(H, W, 3)`` uint8 RGB numpy arrays, everywhere. Boxes are ``(x1, y1, x2, y2)``
pixels; embeddings are L2-normalised float32, so similarity is cosine in [-1, 1]. Every result has a
``to_dict()`` that is exactly what the CLI prints with ``--json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestyle.align.landmarks import landmarks_of
from facestyle.checks import check_threshold
from facestyle.detect.faces import Detector, Face, FaceChoice, only_face
from facestyle.detect.finding import DEFAULT_CROP, CropMode, FaceFinder, check_crop
from facestyle.embed.embedder import Embedder
from facestyle.embed.features import FaceFeatures, NoFacePolicy, face_finder
from facestyle.embed.loader import load_embedder
from facestyle.errors import FacestyleError, ImageError, combine
from facestyle.io.images import ImageLike, as_rgb, load_image, save_image
from facestyle.models import registry


@dataclass
class ImageResult:
    """Outcome for one input file of a batch: ``status`` is ``ok``, ``no_face`` or ``error``."""

    path: str
    status: str
    faces: list[Face]
    error: str | None = None

    def to_dict(self, embedding: bool = True) -> dict:
        data: dict = {
            "image": self.path,
            "status": self.status,
            "faces": [f.to_dict(embedding) for f in self.faces],
        }
        if self.error:
            data["error"] = self.error
        return data


@dataclass
class Comparison:
    """1:1 answer. ``same`` is None when the model has no measured threshold and none was given."""

    similarity: float
    threshold: float | None
    same: bool | None
    model: str
    image1: str = ""
    image2: str = ""
    found_by1: str = "detector"  # how each image's face was found (Face.found_by)
    found_by2: str = "detector"

    def to_dict(self) -> dict:
        return {
            "image1": self.image1,
            "image2": self.image2,
            "found_by1": self.found_by1,
            "found_by2": self.found_by2,
            "model": self.model,
            "similarity": round(self.similarity, 6),
            "threshold": self.threshold,
            "same": self.same,
        }


class FacePipeline:
    """Detect -> align -> embed, with the models loaded once.

    ``model`` is a registered embedder name (``facestyle models list``) or a checkpoint file from
    ``facestyle train``; ``detector`` is a registered detector (``mtcnn``: landmarks, the accurate
    default; ``haar``: faster, box only), a grid-head file from ``facestyle detect-head train``, or a
    :class:`~facestyle.detect.faces.Detector` object.

    ``crop`` is the face-finding policy (:mod:`facestyle.detect.finding`): ``detect`` (the detector
    alone), ``auto`` (the default: detect, then a padded re-detection, then the whole image as the face
    where it plausibly is a face crop, with landmarks placed by MTCNN's O-Net) or ``whole`` (every image
    is one face). Each :class:`Face` says how it was found (``found_by``).
    """

    def __init__(
        self,
        model: str | Path = "dlib-resnet-v1",
        detector: str | Path | Detector = "mtcnn",
        device: str | None = None,
        crop: CropMode = DEFAULT_CROP,
    ) -> None:
        self.crop: CropMode = check_crop(crop)  # before any model loads
        self.embedder: Embedder = load_embedder(model, device=device)
        self._detector_choice = detector
        self._device = device
        self._detector: Detector | None = detector if isinstance(detector, Detector) else None
        self._finder: FaceFinder | None = None

    @property
    def detector(self) -> Detector:
        """Built on first use: ``embed --aligned`` never pays for a detector."""
        if self._detector is None:
            self._detector = registry.detector(str(self._detector_choice), device=self._device)
        return self._detector

    @property
    def finder(self) -> FaceFinder:
        """The detector under this pipeline's ``crop`` policy (built on first use)."""
        if self._finder is None:
            self._finder = face_finder(self.detector, self.crop, self._device)
        return self._finder

    @property
    def model_name(self) -> str:
        return self.embedder.name

    def detect(self, image: ImageLike) -> list[Face]:
        """Faces (boxes, scores, landmarks, how each was found; no embeddings), largest first."""
        return self.finder.detect(as_rgb(image)[0])

    def faces(self, image: ImageLike) -> list[Face]:
        """Every face in ``image`` with its embedding, largest first."""
        arr, _ = as_rgb(image)
        detected = self.finder.detect(arr)
        if not detected:
            return []
        embeddings = self.embedder.embed_chips(np.stack(self.aligned_chips(arr, detected)))
        for f, e in zip(detected, embeddings, strict=True):
            f.embedding = e
        return detected

    def face(self, image: ImageLike, largest: bool = False, label: str | None = None) -> Face:
        """The one face in ``image``: :class:`NoFaceError` if none, :class:`SeveralFacesError` if
        several and not ``largest`` (then the largest is taken)."""
        arr, name = as_rgb(image, label or "image")
        face = only_face(self.finder.detect(arr), largest, label or name)
        face.embedding = self.embedder.embed_chips(np.stack(self.aligned_chips(arr, [face])))[0]
        return face

    def aligned_chips(self, image: ImageLike, faces: Sequence[Face]) -> list[np.ndarray]:
        """One aligned ``(S, S, 3)`` uint8 chip per face (this model's template and size)."""
        arr, _ = as_rgb(image)
        return [self.embedder.align(arr, landmarks_of(f)) for f in faces]

    def embed_aligned(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of chips that are already aligned to this model's template and size."""
        return self.embedder.embed_chips(chips)

    def features(
        self,
        face: FaceChoice = "largest",
        no_face: NoFacePolicy = "skip",
        cache: bool = True,
        crop: CropMode | None = None,
    ) -> FaceFeatures:
        """The feature service on this pipeline's detector and embedder: one vector per file, cached.
        ``crop`` defaults to the pipeline's face-finding policy."""
        return FaceFeatures(
            self.embedder, self.finder, face=face, crop=crop or self.crop, no_face=no_face, cache=cache
        )

    def embed_files(
        self, paths: Iterable[str | Path], aligned: bool = False, chunk: int = 32
    ) -> Iterator[ImageResult]:
        """One :class:`ImageResult` per path with every face, in order; a bad file is reported and the
        batch goes on. Chips of up to ``chunk`` images are embedded together (one forward pass)."""
        pending: list[tuple[ImageResult, list[np.ndarray]]] = []
        for path in paths:
            pending.append(self._prepare(str(path), aligned))
            if len(pending) >= chunk:
                yield from self._flush(pending)
                pending = []
        yield from self._flush(pending)

    def _prepare(self, path: str, aligned: bool) -> tuple[ImageResult, list[np.ndarray]]:
        try:
            image = load_image(path)
            if aligned:
                size = self.embedder.input_size
                if image.shape[:2] != (size, size):
                    raise ImageError(
                        f"{path}: aligned chips for {self.model_name} are {size}x{size}, "
                        f"this one is {image.shape[1]}x{image.shape[0]}"
                    )
                box = np.array([0, 0, size, size], dtype=np.float32)
                return ImageResult(path, "ok", [Face(box, 1.0, None, found_by="aligned")]), [image]
            detected = self.finder.detect(image)
        except FacestyleError as exc:
            return ImageResult(path, "error", [], str(exc)), []
        if not detected:
            return ImageResult(path, "no_face", []), []
        return ImageResult(path, "ok", detected), self.aligned_chips(image, detected)

    def _flush(self, pending: list[tuple[ImageResult, list[np.ndarray]]]) -> Iterator[ImageResult]:
        chips = [chip for _, cs in pending for chip in cs]
        embeddings = self.embedder.embed_chips(np.stack(chips)) if chips else None
        offset = 0
        for result, cs in pending:
            for face in result.faces[: len(cs)]:
                face.embedding = embeddings[offset]
                offset += 1
            yield result


def face_matrix(results: Sequence[ImageResult], dim: int) -> np.ndarray:
    """``(N, dim)`` float32: each image's largest face's embedding, a NaN row where it has none."""
    rows = np.full((len(results), dim), np.nan, dtype=np.float32)
    for i, r in enumerate(results):
        if r.faces and r.faces[0].embedding is not None:
            rows[i] = r.faces[0].embedding
    return rows


def chip_geometry(model: str | Path = "dlib-resnet-v1") -> tuple[np.ndarray, int]:
    """(template, size) of an embedder's chip, without loading its network where possible."""
    name = str(model)
    if name in registry.MODELS and registry.MODELS[name].template is not None:
        spec = registry.MODELS[name]
        return spec.template, int(spec.input_size or 0)
    embedder = load_embedder(name)  # a trained checkpoint: its base model's template
    return embedder.template, embedder.input_size


def save_face_chips(
    image: ImageLike,
    faces: Sequence[Face],
    folder: str | Path,
    stem: str = "face",
    model: str | Path = "dlib-resnet-v1",
    suffix: str = ".png",
) -> list[Path]:
    """Save each face's aligned chip as ``folder/<stem>_<k><suffix>`` (k = 0 for the first, i.e.
    largest, face), cut as ``model`` expects; returns the paths. PNG by default: a lossless chip, so a
    training set built from chips is not re-compressed. The folder is created if needed."""
    from facestyle.align.warp import align_face

    arr, _ = as_rgb(image)
    template, size = chip_geometry(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        save_image(folder / f"{stem}_{k}{suffix}", align_face(arr, landmarks_of(f), template, size))
        for k, f in enumerate(faces)
    ]


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (normalised here, so raw vectors are fine too)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def compare(
    image1: ImageLike,
    image2: ImageLike,
    pipeline: FacePipeline | None = None,
    threshold: float | None = None,
    largest: bool = True,
) -> Comparison:
    """Are the (largest) faces of two images the same person? Similarity vs the model's threshold.

    The similarity is cosine, except for a checkpoint with a Siamese pair head, whose probability (and
    threshold on that scale) is used.
    """
    check_threshold(threshold)  # before the models load or the photos are read
    pipe = pipeline or default_pipeline()
    faces, labels, errors = [], [], []
    for k, image in enumerate((image1, image2), start=1):  # both are read, so both problems are told
        try:
            arr, label = as_rgb(image, f"image{k}")
            faces.append(pipe.face(arr, largest=largest, label=label))
            labels.append(label)
        except FacestyleError as exc:
            errors.append(exc)
    if errors:
        raise combine(errors)
    similarity = float(pipe.embedder.score_pairs(faces[0].embedding[None], faces[1].embedding[None])[0])
    t = threshold if threshold is not None else pipe.embedder.default_threshold
    return Comparison(
        similarity,
        t,
        None if t is None else similarity >= t,
        pipe.model_name,
        *labels,
        found_by1=faces[0].found_by,
        found_by2=faces[1].found_by,
    )


def face_embeddings(image: ImageLike, model: str = "dlib-resnet-v1") -> np.ndarray:
    """``(N, D)`` embeddings of every face in ``image`` (largest first); ``(0, D)`` if none."""
    pipe = default_pipeline(model)
    faces = pipe.faces(image)
    if not faces:
        return np.zeros((0, pipe.embedder.embedding_size), dtype=np.float32)
    return np.stack([f.embedding for f in faces])


def detect_faces(image: ImageLike, detector: str = "mtcnn", crop: CropMode = DEFAULT_CROP) -> list[Face]:
    """Boxes, scores and landmarks of every face in ``image``, largest first, found under the ``crop``
    policy (no embedder is loaded)."""
    check_crop(crop)
    if (detector, crop) not in _DETECTORS:
        base = _DETECTORS.get((detector, "detect")) or registry.detector(detector)
        _DETECTORS[(detector, "detect")] = base
        _DETECTORS[(detector, crop)] = face_finder(base, crop)
    return _DETECTORS[(detector, crop)].detect(as_rgb(image)[0])


_PIPELINES: dict[tuple[str, str, str], FacePipeline] = {}
_DETECTORS: dict[tuple[str, str], Detector] = {}


def default_pipeline(
    model: str = "dlib-resnet-v1", detector: str = "mtcnn", crop: CropMode = DEFAULT_CROP
) -> FacePipeline:
    """A process-wide pipeline per (model, detector, crop), built on first use."""
    key = (model, detector, check_crop(crop))
    if key not in _PIPELINES:
        _PIPELINES[key] = FacePipeline(model, detector, crop=crop)
    return _PIPELINES[key]


__all__: Sequence[str] = (
    "Comparison",
    "Face",
    "FacePipeline",
    "ImageResult",
    "chip_geometry",
    "compare",
    "cosine_similarity",
    "default_pipeline",
    "detect_faces",
    "face_embeddings",
    "face_matrix",
    "load_image",
    "save_face_chips",
)
