"""One declarative entry per pretrained model: where its weights come from and what it expects.

Modelled on torchvision's weights enums: everything a caller needs to know about a model (source,
checksum, licence, input size, embedding size, default threshold) lives in its entry, and loading is
one call (:func:`facestyle.models.weights.weight_path`) that reads the package data or the cache and
checks the hash. Commands never hard-code paths or URLs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from facestyle.errors import UsageError


@dataclass(frozen=True)
class WeightFile:
    """One file of weights.

    Exactly one of ``package`` (a pip package that ships the file, located without importing it) or
    ``url`` (a public download, read from the cache or put there by ``facestyle models import``) is set.
    ``sha256`` is the full hex digest; where the publisher only gives a prefix (torchvision puts the
    first 8 hex digits in the file name) ``sha256`` holds that prefix and is checked as one.
    """

    filename: str
    sha256: str
    package: str | None = None
    package_path: str | None = None
    url: str | None = None
    size_bytes: int | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything the toolkit knows about one pretrained model."""

    name: str
    kind: Literal["embedder", "detector", "backbone"]
    description: str
    licence: str
    files: tuple[WeightFile, ...]
    input_size: int | None = None
    embedding_size: int | None = None
    #: Cosine-similarity threshold for "same person", with where it was measured. None for non-embedders.
    default_threshold: float | None = None
    threshold_source: str = ""
    notes: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def bundled(self) -> bool:
        """True when every file ships inside an installed package (no download ever needed)."""
        return all(f.package for f in self.files)


_FRM = "face_recognition_models"  # pip: face-recognition-models (CC0 data of dlib's models)
_FNP = "facenet_pytorch"  # pip: facenet-pytorch (MIT), ships the MTCNN weights in its wheel

MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry; names are unique."""
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} registered twice")
    MODELS[spec.name] = spec
    return spec


DLIB_RESNET = register(
    ModelSpec(
        name="dlib-resnet-v1",
        kind="embedder",
        description="dlib's ResNet face descriptor (dlib reports 99.38% on LFW), run as a PyTorch module",
        licence="CC0-1.0 (Davis King, via face-recognition-models)",
        files=(
            WeightFile(
                filename="dlib_face_recognition_resnet_model_v1.dat",
                sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
                package=_FRM,
                package_path="models/dlib_face_recognition_resnet_model_v1.dat",
                size_bytes=22_466_066,
            ),
        ),
        input_size=150,
        embedding_size=128,
        default_threshold=0.908,
        threshold_source=(
            "best 10-fold threshold on LFW View 1 pairsDevTrain (2199 pairs used, 1 without a face), "
            "MTCNN + measured dlib template + dlib-resnet-v1, cosine; 10-fold accuracy 98.73% +/- 0.49%, "
            "per-fold thresholds 0.903-0.912. Re-measure with `facestyle eval pairs`; per-gallery "
            "thresholds come from `facestyle calibrate`."
        ),
    )
)

DLIB_SHAPE5 = register(
    ModelSpec(
        name="dlib-shape-predictor-5",
        kind="detector",
        description="dlib's 5-point landmark predictor; used only to derive and check chip geometry",
        licence="CC0-1.0 (Davis King, via face-recognition-models)",
        files=(
            WeightFile(
                filename="shape_predictor_5_face_landmarks.dat",
                sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
                package=_FRM,
                package_path="models/shape_predictor_5_face_landmarks.dat",
                size_bytes=9_150_489,
            ),
        ),
    )
)

MTCNN = register(
    ModelSpec(
        name="mtcnn",
        kind="detector",
        description="MTCNN face detector (P-, R-, O-Net; Zhang et al. 2016), weights from facenet-pytorch",
        licence="MIT (facenet-pytorch)",
        files=tuple(
            WeightFile(filename=f"{net}.pt", sha256=digest, package=_FNP, package_path=f"data/{net}.pt")
            for net, digest in (
                ("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
                ("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
                ("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
            )
        ),
    )
)

FACENET_VGGFACE2 = register(
    ModelSpec(
        name="facenet-vggface2",
        kind="embedder",
        description="InceptionResnetV1 trained on VGGFace2 (facenet-pytorch port of D. Sandberg's facenet)",
        licence="MIT (facenet-pytorch); trained on VGGFace2 (research use)",
        files=(
            WeightFile(
                filename="20180402-114759-vggface2.pt",
                # Digest as published by third-party verifiers of this release asset; a mismatch on
                # import is reported with both digests rather than silently accepted.
                sha256="281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
                url="https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
                size_bytes=None,
            ),
        ),
        input_size=160,
        embedding_size=512,
    )
)

VGG19_IMAGENET = register(
    ModelSpec(
        name="vgg19-imagenet",
        kind="backbone",
        description="torchvision VGG19 (ImageNet-1k, top-1 72.38%): the quality default for style transfer",
        licence="CC-BY-4.0 (Simonyan & Zisserman); torchvision BSD-3",
        files=(
            WeightFile(
                filename="vgg19-dcbb9e9d.pth",
                sha256="dcbb9e9d",  # torchvision's convention: the file name carries the digest prefix
                url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
                size_bytes=574_673_361,
            ),
        ),
        input_size=224,
    )
)


def get_model(name: str) -> ModelSpec:
    """Return the registry entry for ``name`` or raise a one-line error listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UsageError(f"unknown model {name!r}; known models: {known}") from None


def list_models(kind: str | None = None) -> list[ModelSpec]:
    """All registered models, optionally only those of one ``kind``, in registration order."""
    return [m for m in MODELS.values() if kind is None or m.kind == kind]
