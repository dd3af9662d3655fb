"""Image classification by transfer learning: a linear or small MLP head on frozen backbone features.

:class:`Classifier` is the public API::

    from facestyle.heads.classify import Classifier

    clf = Classifier.train("photos/", train_per_class=1)   # a folder per class
    clf.save("head.pt")
    Classifier.load("head.pt").predict(["photo.jpg"], top_k=3)

The backbone (the feature service, :mod:`facestyle.embed.features`) turns every image into a vector
once: a face embedder on each photo's largest face, or an image backbone pooled over the whole image.
The head is then a few thousand parameters trained with cross-entropy in seconds, which is what makes
"a folder per class, a handful of images each" workable. The data set is a directory with one
sub-directory per class; a stratified held-out split (a fraction, or "N training images per class" for
few-shot runs) gives the accuracy, per-class report and confusion matrix that are stored with the head.
With ``fine_tune_epochs`` the dlib ResNet's last stage is trained with the classifier instead
(:mod:`facestyle.heads.finetune`). Without a named backbone, :func:`facestyle.heads.backbones.choose_backbone`
picks the face embedder for folders of face photos and ``mobilenet-v2-imagenet`` for anything else.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facestyle.checks import check_optimiser, check_top_k, require
from facestyle.detect.finding import DEFAULT_CROP, CropMode, check_crop
from facestyle.embed.features import (
    NO_FACE_POLICIES,
    FaceFeatures,
    FeatureTable,
    ImageFeatures,
    NoFacePolicy,
)
from facestyle.errors import ParameterError, UsageError
from facestyle.heads.backbones import FACE_BACKBONE, choose_backbone, is_auto
from facestyle.heads.finetune import LastStage, stage_inputs, tune_last_stage
from facestyle.io.files import load_tensor_file, save_tensor_file
from facestyle.io.folders import scan_labelled_folder
from facestyle.io.images import ImageLike, save_image
from facestyle.io.progress import Progress, no_progress
from facestyle.threads import thread_count

HEAD_FORMAT = "facestyle-classifier-head/1"

# ------------------------------------------------------------------------------------------- backbones


@dataclass(frozen=True)
class ImagePooling:
    """Which part of :class:`ImageFeatures`' pooled vector (the tap's spatial mean, then its max) a head
    uses, and whether it is scaled to unit length (then it is not standardised: see
    :class:`ClassifierOptions`)."""

    pool: str = "mean+max"  # mean | max | mean+max
    l2: bool = False


#: The pooling of each image backbone (the rest: :data:`DEFAULT_POOLING`). Measured in docs/heads.md:
#: for ``mobilenet-v2-imagenet`` the mean of its 1280-channel ``head`` tap (what its own classifier
#: sees), L2-normalised, beat standardised mean+max on all five small tasks tried (e.g. AT&T whole
#: images, 3 per class: 0.972 vs 0.923); for ``vgg16-hed`` standardised mean+max is as good as any.
POOLING: dict[str, ImagePooling] = {"mobilenet-v2-imagenet": ImagePooling("mean", l2=True)}
DEFAULT_POOLING = ImagePooling()
POOLS = ("mean", "max", "mean+max")


class PooledImageFeatures:
    """:class:`ImageFeatures` (whole image -> backbone, mean and max pooled at one tap, cached) cut to
    an :class:`ImagePooling`: the cache is shared by every pooling of the same backbone and tap."""

    def __init__(self, features: ImageFeatures, pooling: ImagePooling = DEFAULT_POOLING) -> None:
        if pooling.pool not in POOLS:
            raise ParameterError("{pool} is not a pooling; use mean, max or mean+max", pool=pooling.pool)
        self.features = features
        self.pooling = pooling

    @property
    def name(self) -> str:
        return self.features.name

    @property
    def tap(self) -> str:
        return self.features.tap

    @property
    def size(self) -> int:
        return self.features.size

    @property
    def trained(self) -> bool:
        return bool(self.features.trained)

    def embed(self, items: Sequence[ImageLike], progress: Progress = no_progress) -> FeatureTable:
        """One row per image (NaN where it cannot be read), pooled and scaled as :attr:`pooling` says."""
        table = self.features.embed(items, progress)
        values = table.values
        half = values.shape[1] // 2
        if self.pooling.pool == "mean":
            values = values[:, :half]
        elif self.pooling.pool == "max":
            values = values[:, half:]
        if self.pooling.l2 and values.size:
            values = values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
        table.values = np.ascontiguousarray(values, np.float32)
        return table


#: What turns an image into the head's input: a face embedder (largest face) or an image backbone.
FeatureSource = FaceFeatures | PooledImageFeatures


def feature_source(
    backbone: str = FACE_BACKBONE,
    *,
    detector: str = "mtcnn",
    no_face: NoFacePolicy = "skip",
    crop: CropMode = DEFAULT_CROP,
    device: str | None = None,
    cache: bool = True,
) -> FeatureSource:
    """The feature service for a registered model: face embedders (``dlib-resnet-v1``, ...) embed each
    photo's largest face; image backbones (``mobilenet-v2-imagenet``, ``vgg16-hed``, ...) pool the whole
    image at their ``feature_tap`` (:data:`POOLING`). Every network comes from the registry. Faces are
    found under the face-finding policy ``crop`` (``no_face="whole"``: its old alias of ``auto``)."""
    from facestyle.embed.loader import load_embedder
    from facestyle.models.registry import detector as make_detector
    from facestyle.models.registry import get_model

    spec = get_model(backbone)
    if spec.kind == "embedder":
        finder = make_detector(detector, device)
        return FaceFeatures(
            load_embedder(backbone, device), finder, face="largest", crop=crop, no_face=no_face, cache=cache
        )
    if spec.build_extractor is None:
        raise ParameterError("{backbone} is a " + spec.kind + ", not a backbone", backbone=backbone)
    return PooledImageFeatures(
        ImageFeatures(backbone, device=device, cache=cache), POOLING.get(backbone, DEFAULT_POOLING)
    )


def source_config(source: FeatureSource) -> dict:
    """How to rebuild ``source`` later (stored in the head file)."""
    if isinstance(source, FaceFeatures):
        return {
            "name": source.embedder.name,
            "kind": "face",
            "detector": source.detector.name,
            "no_face": source.no_face,
            "crop": source.crop,
        }
    return {
        "name": source.name,
        "kind": "image",
        "tap": source.tap,
        "size": source.size,
        "pool": source.pooling.pool,
        "l2": source.pooling.l2,
    }


def source_from_config(config: dict, device: str | None = None, cache: bool = False) -> FeatureSource:
    """Rebuild the feature source a head was trained on (from its head file; files written before
    poolings were chosen per backbone used standardised mean+max)."""
    if config.get("kind") == "face":
        return feature_source(
            config["name"],
            detector=config["detector"],
            no_face=config["no_face"],
            crop=config.get("crop", DEFAULT_CROP),  # head files before issue 20 have none
            device=device,
            cache=cache,
        )
    if config.get("kind") == "image":
        features = ImageFeatures(
            config["name"], tap=config["tap"], size=int(config["size"]), device=device, cache=cache
        )
        pooling = ImagePooling(str(config.get("pool", "mean+max")), bool(config.get("l2", False)))
        return PooledImageFeatures(features, pooling)
    raise UsageError(f"unknown backbone description in head file: {config!r}")


def source_trained(source: FeatureSource) -> bool:
    """False when the source's network has random weights (its numbers say nothing about pretraining)."""
    return bool(source.trained) if isinstance(source, PooledImageFeatures) else True


def unit_length(source: FeatureSource) -> bool:
    """Whether the source's vectors are unit length (face embeddings, L2-pooled image features)."""
    return isinstance(source, FaceFeatures) or source.pooling.l2


def check_split(test_fraction: float, train_per_class: int | None) -> None:
    """The held-out share must lie strictly between 0 and 1; a few-shot count must be at least 1."""
    require(0.0 < test_fraction < 1.0, "{test_fraction} must be between 0 and 1", test_fraction=test_fraction)
    require(
        train_per_class is None or train_per_class >= 1,
        "{train_per_class} must be at least 1",
        train_per_class=train_per_class,
    )


def stratified_split(
    labels: np.ndarray, test_fraction: float = 0.3, train_per_class: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with every class in both where it has >= 2 images.

    ``train_per_class`` (few-shot) takes exactly that many training images per class and tests on the
    rest; otherwise ``round(test_fraction * n)`` images per class (at least one) are held out.
    """
    check_split(test_fraction, train_per_class)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for k in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if train_per_class is not None:
            n_train = min(train_per_class, len(idx))
        else:
            n_train = len(idx) - max(1, round(test_fraction * len(idx))) if len(idx) >= 2 else len(idx)
        train += idx[:n_train].tolist()
        test += idx[n_train:].tolist()
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(test, np.int64))


# ------------------------------------------------------------------------------------------- model


class ClassifierHead(nn.Module):
    """Standardise features with the training set's statistics, then linear (``hidden=0``) or
    linear-ReLU-dropout-linear. The statistics are buffers, so the head file alone reproduces it."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, n_classes),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass
class ClassifierOptions:
    """How the classifier head is trained (stored in the head file's metrics)."""

    hidden: int = 0
    dropout: float = 0.0
    epochs: int = 300
    lr: float = 0.01
    weight_decay: float = 1e-4
    batch_size: int = 256
    #: Standardise features with training statistics. None: yes for image backbones, no for unit-length
    #: features (face embeddings, L2-pooled image features: with one or two images per class the
    #: statistics are mostly noise).
    standardize: bool | None = None
    seed: int = 0

    def validate(self) -> None:
        """A one-line :class:`ParameterError` for the first option out of range."""
        check_optimiser(self.epochs, self.lr, self.weight_decay)
        require(self.batch_size >= 1, "{batch_size} must be at least 1", batch_size=self.batch_size)
        require(self.hidden >= 0, "{hidden} must be 0 (a linear head) or more", hidden=self.hidden)
        require(0 <= self.dropout < 1, "{dropout} must be at least 0 and below 1", dropout=self.dropout)


def fit_classifier_head(
    feats: np.ndarray, labels: np.ndarray, n_classes: int, config: ClassifierOptions | None = None
) -> ClassifierHead:
    """Fit a head with Adam + cross-entropy on ``(N, D)`` features (CPU; seconds for thousands of rows)."""
    cfg = config or ClassifierOptions()
    cfg.validate()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(np.asarray(feats, np.float32))
    y = torch.from_numpy(np.asarray(labels, np.int64))
    head = ClassifierHead(x.shape[1], n_classes, cfg.hidden, cfg.dropout)
    if cfg.standardize is not False and len(x) > 1:
        head.mean.copy_(x.mean(0))
        head.std.copy_(x.std(0).clamp_min(1e-6))
    opt = torch.optim.Adam(head.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    head.train()
    with _single_thread():  # tiny matrices: thread start-up costs more than the arithmetic
        _fit(head, opt, loss_fn, x, y, cfg, gen)
    return head.eval()


def _single_thread() -> contextlib.AbstractContextManager[None]:
    return thread_count(torch.get_num_threads, torch.set_num_threads, 1)


def _fit(head, opt, loss_fn, x, y, cfg: ClassifierOptions, gen: torch.Generator) -> None:
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss_fn(head(x[idx]), y[idx]).backward()
            opt.step()


@torch.inference_mode()
def predict_proba(head: ClassifierHead, feats: np.ndarray) -> np.ndarray:
    return torch.softmax(head.eval()(torch.from_numpy(np.asarray(feats, np.float32))), dim=1).numpy()


# ------------------------------------------------------------------------------------------- metrics


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``cm[t, p]`` = how many of class ``t`` were predicted as ``p``."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_report(cm: np.ndarray, classes: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    rows = []
    for k, name in enumerate(classes):
        tp = float(cm[k, k])
        predicted, support = float(cm[:, k].sum()), float(cm[k, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int(support)}
        )
    return rows


def save_confusion_png(cm: np.ndarray, classes: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix as a heat map, counts written in cells when there is room
    (written atomically; PNG, JPEG, ... by the extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(classes)
    size = min(16.0, max(4.0, 0.28 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros(cm.shape, float), where=totals > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fontsize = max(4, min(10, int(200 / max(n, 1))))
    ax.set_xticks(range(n), classes, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), classes, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for t in range(n):
            for p in range(n):
                if cm[t, p]:
                    ink = "white" if norm[t, p] > 0.5 else "black"
                    ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=fontsize, color=ink)
    ax.set_title(title or "confusion matrix (rows: true class, normalised)")
    fig.tight_layout()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(path, rgb)  # the one image writer: atomic, format from the extension


# ------------------------------------------------------------------------------------------- workflow

#: The registered model whose last stage ``fine_tune_epochs`` trains.
FINE_TUNABLE = FACE_BACKBONE


@dataclass
class Prediction:
    """Top classes of one image; ``status`` is ``ok``, ``no_face`` or ``error`` (then ``error`` says why).

    ``path`` is the file, or ``<array i>`` for the ``i``-th input given as an array.
    """

    path: str
    status: str
    top: list[tuple[str, float]]
    error: str | None = None

    def to_dict(self) -> dict:
        data = {
            "image": self.path,
            "status": self.status,
            "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top],
        }
        if self.error:
            data["error"] = self.error
        return data


class Classifier:
    """A trained classifier: its head, class names, the backbone it runs on and its held-out report.

    Make one with :meth:`train` (a folder with a sub-folder of images per class) or :meth:`load` (a
    head file from :meth:`save` or ``facestyle classify train``); :meth:`predict` classifies files and
    ``(H, W, 3)`` uint8 arrays alike, with the backbone rebuilt from the head's own description.
    """

    def __init__(
        self,
        head: ClassifierHead,
        classes: Sequence[str],
        backbone: dict,
        metrics: dict,
        confusion: np.ndarray | None = None,
        skipped: Sequence[tuple[str, str]] = (),
        fine_tuned: dict | None = None,
        *,
        source: FeatureSource | None = None,
        device: str | None = None,
    ) -> None:
        self.head = head.eval()
        self.backbone = dict(backbone)
        #: With last-stage fine-tuning: state dicts of the tuned dlib ResNet block and projection.
        self.fine_tuned = fine_tuned
        self._classes = list(classes)
        self._metrics = dict(metrics)
        self._confusion = None if confusion is None else np.asarray(confusion, np.int64)
        self._skipped = [(str(p), str(r)) for p, r in skipped]
        self._source = source
        self._device = device
        self._stage: LastStage | None = None

    # -- what it knows ---------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Class names (the data set's sub-folder names, sorted); a prediction's index into them."""
        return list(self._classes)

    @property
    def metrics(self) -> dict:
        """Held-out accuracy, per-class precision/recall/F1, counts, times, split and options."""
        return dict(self._metrics)

    @property
    def confusion(self) -> np.ndarray | None:
        """``cm[true, predicted]`` counts on the held-out images (None in head files that lack it)."""
        return None if self._confusion is None else self._confusion.copy()

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of the training images left out (no face, unreadable)."""
        return list(self._skipped)

    def to_dict(self) -> dict:
        """The training report as JSON-able data (what ``classify train --json`` prints, less the
        paths of the files it wrote)."""
        return {
            **self._metrics,
            "backbone": dict(self.backbone),
            "classes": self.classes,
            "skipped": [{"image": p, "reason": r} for p, r in self._skipped],
        }

    def __repr__(self) -> str:
        accuracy = self._metrics.get("accuracy", float("nan"))
        return (
            f"Classifier({len(self._classes)} classes on {self.backbone.get('name')}, "
            f"held-out accuracy {accuracy:.3f})"
        )

    # -- training ------------------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        data_dir: str | Path,
        backbone: str | None = None,
        *,
        detector: str = "mtcnn",
        no_face: NoFacePolicy = "skip",
        crop: CropMode = DEFAULT_CROP,
        options: ClassifierOptions | None = None,
        test_fraction: float = 0.3,
        train_per_class: int | None = None,
        split_seed: int = 0,
        fine_tune_epochs: int = 0,
        device: str | None = None,
        cache: bool = True,
        progress: Progress = no_progress,
    ) -> Classifier:
        """Scan ``data_dir`` (``data_dir/<class>/<image>``), embed every image (cached), split, train
        the head and score it on the held-out part.

        ``backbone``: a face embedder (``dlib-resnet-v1``, ``facenet-vggface2``: each photo's largest
        face found by ``detector`` under the face-finding policy ``crop``: ``detect``, ``auto`` or
        ``whole``; ``no_face="whole"`` is the old name of ``crop="auto"``), an
        image backbone (``mobilenet-v2-imagenet``, ``vgg16-hed``: the whole image), or None (or
        ``"auto"``): the face embedder when most of a sample of the images show one dominant face,
        else ``mobilenet-v2-imagenet`` (:func:`~facestyle.heads.backbones.choose_backbone`; the reason
        is reported as ``backbone_reason``). ``train_per_class`` (few-shot) trains on
        exactly that many images per class; otherwise ``test_fraction`` of each class is held out.
        ``fine_tune_epochs`` > 0 (dlib-resnet-v1 only) also trains the network's last stage with the
        classifier. Every parameter is checked before a network is built.
        """
        from facestyle.device import resolve_device

        cfg = options or ClassifierOptions()
        cfg.validate()
        check_split(test_fraction, train_per_class)
        require(no_face in NO_FACE_POLICIES, "{no_face} is not a policy; use skip or whole", no_face=no_face)
        check_crop(crop)
        require(
            fine_tune_epochs >= 0,
            "{fine_tune_epochs} must be 0 (no fine-tuning) or more",
            fine_tune_epochs=fine_tune_epochs,
        )
        require(
            not fine_tune_epochs or is_auto(backbone) or backbone == FINE_TUNABLE,
            "{fine_tune_epochs} tunes the last stage of " + FINE_TUNABLE + ", not of {backbone}",
            fine_tune_epochs=fine_tune_epochs,
            backbone=backbone,
        )
        resolve_device(device)
        data = scan_labelled_folder(data_dir, min_labels=2)
        choice = choose_backbone(
            data.paths,
            backbone,
            detector=detector,
            crop=crop,
            fine_tune_epochs=fine_tune_epochs,
            device=device,
            progress=progress,
        )
        source = feature_source(
            choice.name, detector=detector, no_face=no_face, crop=crop, device=device, cache=cache
        )
        if fine_tune_epochs:
            table, acts = _chip_activations(source, data.paths, progress)  # type: ignore[arg-type]
        else:
            table, acts = source.embed(data.paths, progress), None
        usable = np.flatnonzero(table.ok)
        skipped = [(table.paths[i], table.reason(i)) for i in np.flatnonzero(~table.ok)]
        if usable.size == 0:
            raise UsageError(f"{data_dir}: no usable image (every one failed or had no face)")
        # Positions among the usable images (the rows of ``acts``), then indices into the data set.
        train_pos, test_pos = stratified_split(
            data.labels[usable], test_fraction, train_per_class, split_seed
        )
        train_idx, test_idx = usable[train_pos], usable[test_pos]
        if cfg.standardize is None:
            cfg = dataclasses.replace(cfg, standardize=not unit_length(source))
        n = len(data.names)
        t0 = time.perf_counter()
        fine_tuned = None
        if acts is not None:
            stage, _ = tune_last_stage(
                acts[torch.from_numpy(train_pos)],
                data.labels[train_idx],
                source.embedder.module,  # type: ignore[union-attr]
                n,
                epochs=fine_tune_epochs,
                seed=cfg.seed,
            )
            head, fine_tuned = _head_from_stage(stage), _stage_states(stage)
            with torch.inference_mode():
                test_feats = stage.embed(acts[torch.from_numpy(test_pos)]).numpy()
        else:
            head = fit_classifier_head(table.values[train_idx], data.labels[train_idx], n, cfg)
            test_feats = table.values[test_idx]
        t_train = time.perf_counter() - t0
        if test_idx.size:
            pred = predict_proba(head, test_feats).argmax(axis=1)
            cm = confusion_matrix(data.labels[test_idx], pred, n)
            accuracy = float(np.mean(pred == data.labels[test_idx]))
        else:
            cm, accuracy = np.zeros((n, n), np.int64), float("nan")
        metrics = {
            "accuracy": accuracy,
            "n_train": int(train_idx.size),
            "n_test": int(test_idx.size),
            "n_skipped": len(skipped),
            "n_classes": n,
            "features_computed": int(table.computed),
            "feature_seconds": round(table.seconds, 3),
            "train_seconds": round(t_train, 3),
            "backbone_trained": source_trained(source),
            "backbone_reason": choice.reason,
            "backbone_probe": choice.to_dict(),
            "per_class": per_class_report(cm, data.names),
            "split": {"test_fraction": test_fraction, "train_per_class": train_per_class, "seed": split_seed},
            "options": dataclasses.asdict(cfg),
        }
        if fine_tune_epochs:
            metrics["fine_tune_epochs"] = fine_tune_epochs
        return cls(
            head,
            data.names,
            source_config(source),
            metrics,
            cm,
            skipped,
            fine_tuned,
            source=source,
            device=device,
        )

    # -- files ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the head file atomically: plain tensors, strings and numbers (``weights_only``-safe),
        with the backbone's description, the report, the confusion matrix and the skipped images."""
        head = self.head
        hidden = head.net[0].out_features if isinstance(head.net[0], nn.Linear) else 0
        return save_tensor_file(
            path,
            {
                "format": HEAD_FORMAT,
                "backbone": dict(self.backbone),
                "classes": self.classes,
                "arch": {
                    "in_dim": int(head.mean.shape[0]),
                    "hidden": int(hidden),
                    "n_classes": len(self._classes),
                },
                "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
                "metrics": {k: v for k, v in self._metrics.items() if k != "per_class"},
                "confusion": None if self._confusion is None else torch.from_numpy(self._confusion),
                "skipped": [list(s) for s in self._skipped],
                "fine_tuned": self.fine_tuned,
            },
        )

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Classifier:
        """Read a head file (``weights_only=True``: no code is unpickled). The backbone is built on
        ``device`` at the first :meth:`predict`."""
        from facestyle.device import resolve_device

        resolve_device(device)
        path = Path(path)
        ckpt = load_tensor_file(path, "classifier head")
        if not isinstance(ckpt, dict) or ckpt.get("format") != HEAD_FORMAT:
            raise UsageError(f"{path}: not a facestyle classifier head (expected format {HEAD_FORMAT})")
        arch = ckpt["arch"]
        head = ClassifierHead(arch["in_dim"], arch["n_classes"], arch["hidden"])
        head.load_state_dict(ckpt["state_dict"])
        classes = list(ckpt["classes"])
        metrics = dict(ckpt["metrics"])
        confusion = ckpt.get("confusion")
        if confusion is not None:
            confusion = confusion.numpy()
            metrics["per_class"] = per_class_report(confusion, classes)
        return cls(
            head,
            classes,
            dict(ckpt["backbone"]),
            metrics,
            confusion,
            [tuple(s) for s in ckpt.get("skipped") or []],
            ckpt.get("fine_tuned"),
            device=device,
        )

    def save_confusion_png(self, path: str | Path, title: str | None = None) -> Path:
        """The held-out confusion matrix as a row-normalised heat map (:func:`save_confusion_png`)."""
        if self._confusion is None:
            raise UsageError("this head file holds no confusion matrix (it predates them)")
        title = title or f"{self.backbone.get('name')}: held-out confusion"
        return save_confusion_png(self._confusion, self._classes, path, title=title)

    # -- prediction ----------------------------------------------------------------------------------
    def predict(
        self, images: ImageLike | Sequence[ImageLike], top_k: int = 1, progress: Progress = no_progress
    ) -> list[Prediction]:
        """The ``top_k`` classes of each image (paths and/or ``(H, W, 3)`` uint8 arrays; one image may
        be passed alone), most probable first. An image without a face or that cannot be read gets a
        ``no_face`` or ``error`` status instead of an exception."""
        check_top_k(top_k)
        items = image_list(images)
        source = self._feature_source()
        if self.fine_tuned:
            table, acts = _chip_activations(source, items, progress)  # type: ignore[arg-type]
            with torch.inference_mode():
                table.values[table.ok] = self._last_stage(source).embed(acts).numpy()
        else:
            table = source.embed(items, progress)
        ok = table.ok
        probs = np.zeros((len(items), len(self._classes)), np.float32)
        if ok.any():
            probs[ok] = predict_proba(self.head, table.values[ok])
        k = min(top_k, len(self._classes))
        out = []
        for i, label in enumerate(table.paths):
            if not ok[i]:
                out.append(Prediction(label, table.status[i], [], table.errors[i]))
                continue
            order = np.argsort(-probs[i], kind="stable")[:k]
            out.append(Prediction(label, "ok", [(self._classes[j], float(probs[i, j])) for j in order]))
        return out

    def _feature_source(self) -> FeatureSource:
        """The backbone the head was trained on (as trained, or rebuilt from the head file, uncached)."""
        if self._source is None:
            self._source = source_from_config(self.backbone, device=self._device, cache=False)
        return self._source

    def _last_stage(self, source: FaceFeatures) -> LastStage:
        if self._stage is None:
            stage = LastStage(source.embedder.module, len(self._classes))  # type: ignore[arg-type]
            stage.block.load_state_dict(self.fine_tuned["block"])  # type: ignore[index]
            stage.fc.load_state_dict(self.fine_tuned["fc"])  # type: ignore[index]
            self._stage = stage.eval()
        return self._stage


def image_list(images: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """One path or array -> a list of one; a sequence (or an ``(N, H, W, 3)`` array) -> a list."""
    if isinstance(images, str | os.PathLike) or (isinstance(images, np.ndarray) and images.ndim < 4):
        return [images]
    return list(images)


def _chip_activations(
    source: FaceFeatures, items: Sequence[ImageLike], progress: Progress = no_progress
) -> tuple[FeatureTable, torch.Tensor]:
    """Each image's chosen face as the activations entering the dlib ResNet's last block (one row per
    image with a face, in order; CPU), and a table saying which images have one (values NaN, to be
    filled with the tuned stage's embeddings)."""
    t0 = time.perf_counter()
    results = source.chips(items, progress)
    good = [r.chip for r in results if r.status == "ok"]
    size = source.embedder.input_size  # type: ignore[attr-defined]
    acts = stage_inputs(
        source.embedder.module,  # type: ignore[attr-defined]
        np.stack(good) if good else np.zeros((0, size, size, 3), np.uint8),
    )
    n = len(results)
    table = FeatureTable(
        [r.path for r in results],
        np.full((n, source.embedder.embedding_size), np.nan, np.float32),
        [r.status for r in results],
        [r.error for r in results],
        np.array([r.box for r in results], np.float32).reshape(-1, 4),
        computed=len(good),
    )
    table.seconds = time.perf_counter() - t0
    return table, acts


def _stage_states(stage: LastStage) -> dict:
    """The tuned block's and projection's weights, as CPU state dicts (what the head file stores)."""
    return {
        "block": {k: v.detach().cpu() for k, v in stage.block.state_dict().items()},
        "fc": {k: v.detach().cpu() for k, v in stage.fc.state_dict().items()},
    }


def _head_from_stage(stage: LastStage) -> ClassifierHead:
    """The fine-tuned classifier as a (non-standardising) ClassifierHead over tuned embeddings."""
    head = ClassifierHead(stage.classifier.in_features, stage.classifier.out_features, 0)
    head.net[1].load_state_dict(stage.classifier.state_dict())
    return head.eval()
