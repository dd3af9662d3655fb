"""The public face API: plain functions for the common calls, one object where state is real.

>>> from facestyle import FacePipeline, load_image
>>> pipe = FacePipeline()                        # MTCNN + dlib ResNet (128-d), CPU or CUDA
>>> faces = pipe.faces(load_image("photo.jpg"))  # list[Face]: box, score, landmarks, embedding
>>> result = compare("a.jpg", "b.jpg")           # Comparison(similarity, same, threshold)

Images are ``(H, W, 3)`` uint8 RGB numpy arrays (or paths, where a function says so). Boxes are
``(x1, y1, x2, y2)`` pixels; embeddings are L2-normalised float32, so similarity is cosine in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestyle.detect.base import DetectedFace, Detector, get_detector
from facestyle.embed.embedder import Embedder, load_embedder
from facestyle.errors import FacestyleError, NoFaceError, SeveralFacesError
from facestyle.io.images import load_image

#: Landmark positions relative to the box (x, y in [0, 1]) for detectors that give no landmarks
#: (Haar): the median of MTCNN's landmarks inside its boxes on 150 LFW faces, made left/right
#: symmetric. Coarser than real landmarks, so Haar-based embeddings are less accurate.
_BOX_RELATIVE_LANDMARKS = np.array(
    [[0.265, 0.389], [0.735, 0.389], [0.497, 0.589], [0.289, 0.759], [0.711, 0.759]], dtype=np.float64
)


@dataclass
class Face:
    """A detected face and, once embedded, its unit-length embedding."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray | None
    embedding: np.ndarray | None = None

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def to_dict(self, embedding: bool = True) -> dict:
        data = DetectedFace(self.box, self.score, self.landmarks).to_dict()
        if embedding and self.embedding is not None:
            data["embedding"] = [round(float(v), 6) for v in self.embedding]
        return data


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


def landmarks_of(face: DetectedFace) -> np.ndarray:
    """The face's five landmarks, or estimates from its box when the detector gives none."""
    if face.landmarks is not None:
        return np.asarray(face.landmarks, dtype=np.float64)
    x1, y1, x2, y2 = (float(v) for v in face.box)
    return np.array([x1, y1]) + _BOX_RELATIVE_LANDMARKS * np.array([x2 - x1, y2 - y1])


class FacePipeline:
    """Detect -> align -> embed, with the models loaded once.

    ``model`` is a registered embedder name (``facestyle models list``) or a trained checkpoint file;
    ``detector`` is ``mtcnn`` (landmarks, the accurate default) or ``haar`` (faster, box only).
    """

    def __init__(self, model: str = "dlib-resnet-v1", detector: str = "mtcnn", device: str | None = None):
        self.embedder: Embedder = load_embedder(model, device=device)
        self._detector_name = detector
        self._device = device
        self._detector: Detector | None = None

    @property
    def detector(self) -> Detector:
        """Built on first use: ``embed --aligned`` never pays for a detector."""
        if self._detector is None:
            self._detector = get_detector(self._detector_name, device=self._device)
        return self._detector

    @property
    def model_name(self) -> str:
        return self.embedder.name

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        return self.detector.detect(image)

    def faces(self, image: np.ndarray) -> list[Face]:
        """Every face in ``image`` with its embedding, largest first."""
        detected = self.detect(image)
        if not detected:
            return []
        chips = np.stack([self.embedder.align(image, landmarks_of(f)) for f in detected])
        embeddings = self.embedder.embed_chips(chips)
        return [Face(f.box, f.score, f.landmarks, e) for f, e in zip(detected, embeddings, strict=True)]

    def face(self, image: np.ndarray | str | Path, largest: bool = False, label: str = "image") -> Face:
        """The one face in ``image``: :class:`NoFaceError` if none, :class:`SeveralFacesError` if
        several and not ``largest``."""
        if not isinstance(image, np.ndarray):
            label = str(image)
            image = load_image(image)
        found = self.faces(image)
        if not found:
            raise NoFaceError(f"{label}: no face found")
        if len(found) > 1 and not largest:
            raise SeveralFacesError(
                f"{label}: {len(found)} faces found; pass --largest to use the largest one"
            )
        return found[0]

    def embed_aligned(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of chips that are already aligned to this model's template and size."""
        return self.embedder.embed_chips(chips)

    def embed_files(
        self, paths: Iterable[str | Path], aligned: bool = False, chunk: int = 32
    ) -> Iterator[ImageResult]:
        """One :class:`ImageResult` per path, in order; a bad file is reported and the batch goes on.

        Chips of up to ``chunk`` images are embedded together (one forward pass per batch).
        """
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
                    raise FacestyleError(
                        f"{path}: --aligned needs {size}x{size} chips for {self.model_name}, "
                        f"got {image.shape[1]}x{image.shape[0]}"
                    )
                box = np.array([0, 0, size, size], dtype=np.float32)
                return ImageResult(path, "ok", [Face(box, 1.0, None)]), [image]
            detected = self.detect(image)
        except FacestyleError as exc:
            return ImageResult(path, "error", [], str(exc)), []
        if not detected:
            return ImageResult(path, "no_face", []), []
        faces = [Face(f.box, f.score, f.landmarks) for f in detected]
        chips = [self.embedder.align(image, landmarks_of(f)) for f in detected]
        return ImageResult(path, "ok", faces), chips

    def _flush(self, pending: list[tuple[ImageResult, list[np.ndarray]]]) -> Iterator[ImageResult]:
        chips = [chip for _, cs in pending for chip in cs]
        embeddings = self.embedder.embed_chips(np.stack(chips)) if chips else None
        offset = 0
        for result, cs in pending:
            for face in result.faces[: len(cs)]:
                face.embedding = embeddings[offset]
                offset += 1
            yield result


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (normalised here, so raw vectors are fine too)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def compare(
    image1: np.ndarray | str | Path,
    image2: np.ndarray | str | Path,
    pipeline: FacePipeline | None = None,
    threshold: float | None = None,
    largest: bool = True,
) -> Comparison:
    """Are the (largest) faces of two images the same person? Similarity vs the model's threshold.

    The similarity is cosine, except for a checkpoint with a Siamese pair head, whose probability (and
    threshold on that scale) is used.
    """
    pipe = pipeline or default_pipeline()
    from facestyle.train.checkpoint import score_pairs

    e1 = pipe.face(image1, largest=largest).embedding
    e2 = pipe.face(image2, largest=largest).embedding
    # Cosine for embedders; a Siamese checkpoint scores with its pair head (a probability).
    similarity = float(score_pairs(pipe.embedder, e1[None], e2[None])[0])
    t = threshold if threshold is not None else pipe.embedder.default_threshold
    return Comparison(similarity, t, None if t is None else similarity >= t, pipe.model_name)


def face_embeddings(image: np.ndarray, model: str = "dlib-resnet-v1") -> np.ndarray:
    """``(N, D)`` embeddings of every face in ``image`` (largest first); ``(0, D)`` if none."""
    pipe = default_pipeline(model)
    faces = pipe.faces(image)
    if not faces:
        return np.zeros((0, pipe.embedder.embedding_size), dtype=np.float32)
    return np.stack([f.embedding for f in faces])


def detect_faces(image: np.ndarray, detector: str = "mtcnn") -> list[DetectedFace]:
    """Boxes, scores and landmarks of every face in ``image``, largest first."""
    return get_detector(detector).detect(image)


_PIPELINES: dict[tuple[str, str], FacePipeline] = {}


def default_pipeline(model: str = "dlib-resnet-v1", detector: str = "mtcnn") -> FacePipeline:
    """A process-wide pipeline per (model, detector), built on first use."""
    key = (model, detector)
    if key not in _PIPELINES:
        _PIPELINES[key] = FacePipeline(model, detector)
    return _PIPELINES[key]


__all__: Sequence[str] = (
    "Comparison",
    "Face",
    "FacePipeline",
    "ImageResult",
    "compare",
    "cosine_similarity",
    "default_pipeline",
    "detect_faces",
    "face_embeddings",
    "landmarks_of",
    "load_image",
)
