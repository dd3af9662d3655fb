"""Image classification by transfer learning: a linear or small MLP head on frozen backbone features.

The backbone (the feature service, :mod:`facestyle.embed.features`) turns every image into a vector
once: a face embedder on each photo's largest face, or an image backbone pooled over the whole image.
The head is then
a few thousand parameters trained with cross-entropy in seconds, which is what makes "a folder per
class, a handful of images each" workable. The data set is a directory with one sub-directory per
class; a stratified held-out split (a fraction, or "N training images per class" for few-shot runs)
gives the accuracy, per-class report and confusion matrix that are stored with the head.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facestyle.embed.features import FaceFeatures, ImageFeatures, NoFacePolicy
from facestyle.errors import ParameterError, UsageError
from facestyle.io.files import load_tensor_file, save_tensor_file
from facestyle.io.folders import LabelledImages, scan_labelled_folder
from facestyle.io.progress import Progress, no_progress

HEAD_FORMAT = "facestyle-classifier-head/1"

#: What turns an image into the head's input: a face embedder (largest face) or an image backbone.
FeatureSource = FaceFeatures | ImageFeatures


# ------------------------------------------------------------------------------------------- backbones


def feature_source(
    backbone: str = "dlib-resnet-v1",
    *,
    detector: str = "mtcnn",
    no_face: NoFacePolicy = "skip",
    device: str | None = None,
    cache: bool = True,
) -> FeatureSource:
    """The feature service for a registered model: face embedders (``dlib-resnet-v1``, ...) embed each
    photo's largest face; image backbones (``vgg19-imagenet``, ...) pool the whole image."""
    from facestyle.embed.loader import load_embedder
    from facestyle.models.registry import detector as make_detector
    from facestyle.models.registry import get_model

    spec = get_model(backbone)
    if spec.kind == "embedder":
        return FaceFeatures(
            load_embedder(backbone, device),
            make_detector(detector, device),
            face="largest",
            no_face=no_face,
            cache=cache,
        )
    if spec.build_extractor is None:
        raise ParameterError("{backbone} is a " + spec.kind + ", not a backbone", backbone=backbone)
    return ImageFeatures(backbone, device=device, cache=cache)


def source_config(source: FeatureSource) -> dict:
    """How to rebuild ``source`` later (stored in the head file)."""
    if isinstance(source, FaceFeatures):
        return {
            "name": source.embedder.name,
            "kind": "face",
            "detector": source.detector.name,
            "no_face": source.no_face,
        }
    return {"name": source.name, "kind": "image", "tap": source.tap, "size": source.size}


def source_from_config(config: dict, device: str | None = None, cache: bool = False) -> FeatureSource:
    """Rebuild the feature source a head was trained on (from its head file)."""
    if config.get("kind") == "face":
        return feature_source(
            config["name"], detector=config["detector"], no_face=config["no_face"], device=device, cache=cache
        )
    if config.get("kind") == "image":
        return ImageFeatures(
            config["name"], tap=config["tap"], size=int(config["size"]), device=device, cache=cache
        )
    raise UsageError(f"unknown backbone description in head file: {config!r}")


def source_trained(source: FeatureSource) -> bool:
    """False when the source's network has random weights (its numbers say nothing about pretraining)."""
    return bool(source.trained) if isinstance(source, ImageFeatures) else True


def stratified_split(
    labels: np.ndarray, test_fraction: float = 0.3, train_per_class: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with every class in both where it has >= 2 images.

    ``train_per_class`` (few-shot) takes exactly that many training images per class and tests on the
    rest; otherwise ``round(test_fraction * n)`` images per class (at least one) are held out.
    """
    if train_per_class is None and not 0.0 < test_fraction < 1.0:
        raise ParameterError("{test_fraction} must be between 0 and 1", test_fraction=test_fraction)
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
    #: Standardise features with training statistics. None: yes for image backbones, no for face
    #: embeddings (already unit length; with one image per class the statistics are mostly noise).
    standardize: bool | None = None
    seed: int = 0


def fit_classifier_head(
    feats: np.ndarray, labels: np.ndarray, n_classes: int, config: ClassifierOptions | None = None
) -> ClassifierHead:
    """Fit a head with Adam + cross-entropy on ``(N, D)`` features (CPU; seconds for thousands of rows)."""
    cfg = config or ClassifierOptions()
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


@contextlib.contextmanager
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    """Row-normalised confusion matrix as a heat map, counts written in cells when there is room."""
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
                    colour = "white" if norm[t, p] > 0.5 else "black"
                    ax.text(p, t, str(cm[t, p]), ha="center", va="center", fontsize=fontsize, color=colour)
    ax.set_title(title or "confusion matrix (rows: true class, normalised)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- workflow


@dataclass
class ClassifierResult:
    """A trained classifier: the head, its classes, the feature source it runs on, held-out metrics."""

    head: ClassifierHead
    classes: list[str]
    backbone: dict
    metrics: dict
    confusion: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    #: With last-stage fine-tuning: state dicts of the tuned dlib ResNet block and projection.
    fine_tuned: dict | None = None

    def checkpoint(self) -> dict:
        """Everything needed to predict later: plain tensors, strings and numbers (weights_only-safe)."""
        head = self.head
        hidden = head.net[0].out_features if isinstance(head.net[0], nn.Linear) else 0
        return {
            "format": HEAD_FORMAT,
            "backbone": dict(self.backbone),
            "classes": list(self.classes),
            "arch": {
                "in_dim": int(head.mean.shape[0]),
                "hidden": int(hidden),
                "n_classes": len(self.classes),
            },
            "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
            "metrics": {k: v for k, v in self.metrics.items() if k != "per_class"},
            "fine_tuned": self.fine_tuned,
        }


def train_classifier(
    data_dir: str | Path,
    source: FeatureSource,
    config: ClassifierOptions | None = None,
    test_fraction: float = 0.3,
    train_per_class: int | None = None,
    split_seed: int = 0,
    progress: Progress = no_progress,
    fine_tune_epochs: int = 0,
) -> ClassifierResult:
    """Scan, extract (cached), split, train, evaluate on the held-out part.

    ``fine_tune_epochs`` > 0 (dlib-resnet-v1 only) also trains the backbone's last stage with the
    classifier (:func:`facestyle.heads.finetune.tune_last_stage`) instead of a head on frozen features.
    """
    is_dlib = isinstance(source, FaceFeatures) and source.embedder.name == "dlib-resnet-v1"
    if fine_tune_epochs and not is_dlib:
        raise ParameterError(
            "{fine_tune_epochs} tunes the dlib-resnet-v1 network's last stage: use that backbone",
            fine_tune_epochs=fine_tune_epochs,
        )
    cfg = config or ClassifierOptions()
    data = scan_labelled_folder(data_dir, min_labels=2)
    t0 = time.perf_counter()
    feats = source.embed(data.paths, progress)
    t_feat = time.perf_counter() - t0
    usable = np.flatnonzero(feats.ok)
    skipped = [(str(data.paths[i]), feats.reason(i)) for i in np.flatnonzero(~feats.ok)]
    if usable.size == 0:
        raise UsageError(f"{data_dir}: no usable image (every one failed or had no face)")
    train_idx, test_idx = stratified_split(data.labels[usable], test_fraction, train_per_class, split_seed)
    train_idx, test_idx = usable[train_idx], usable[test_idx]
    face = isinstance(source, FaceFeatures)
    if cfg.standardize is None:
        cfg = dataclasses.replace(cfg, standardize=not face)
    t1 = time.perf_counter()
    fine_tuned = None
    test_feats = feats.values[test_idx]
    if fine_tune_epochs:
        head, fine_tuned, test_feats = _fine_tune(
            source, data, train_idx, test_idx, fine_tune_epochs, cfg.seed
        )
    else:
        head = fit_classifier_head(feats.values[train_idx], data.labels[train_idx], len(data.names), cfg)
    t_train = time.perf_counter() - t1
    n = len(data.names)
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
        "features_computed": int(feats.computed),
        "feature_seconds": round(t_feat, 3),
        "train_seconds": round(t_train, 3),
        "backbone_trained": source_trained(source),
        "per_class": per_class_report(cm, data.names),
        "split": {"test_fraction": test_fraction, "train_per_class": train_per_class, "seed": split_seed},
        "head": {
            "hidden": cfg.hidden,
            "epochs": cfg.epochs,
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
            "standardize": cfg.standardize,
        },
    }
    if fine_tune_epochs:
        metrics["fine_tune_epochs"] = fine_tune_epochs
    return ClassifierResult(head, data.names, source_config(source), metrics, cm, skipped, fine_tuned)


def _stage_inputs(source: FaceFeatures, paths: list[Path]) -> torch.Tensor:
    """Activations entering the dlib ResNet's last block, for the chosen face of each image."""
    from facestyle.heads.finetune import stage_inputs

    chips = [r.chip for r in source.chips(paths)]
    if any(c is None for c in chips):
        raise UsageError("an image lost its face between feature extraction and fine-tuning")
    return stage_inputs(source.embedder.module, np.stack(chips))


def _fine_tune(source: FaceFeatures, data: LabelledImages, train_idx, test_idx, epochs: int, seed: int):
    """Fine-tune; returns a ClassifierHead over the tuned embeddings, the tuned states, test embeddings."""
    from facestyle.heads.finetune import tune_last_stage

    net = source.embedder.module
    acts_train = _stage_inputs(source, [data.paths[i] for i in train_idx])
    model, _ = tune_last_stage(
        acts_train, data.labels[train_idx], net, len(data.names), epochs=epochs, seed=seed
    )
    head = _head_from_stage(model)
    with torch.inference_mode():
        test_feats = (
            model.embed(_stage_inputs(source, [data.paths[i] for i in test_idx])).numpy()
            if len(test_idx)
            else np.zeros((0, model.fc.out_features), np.float32)
        )
    states = {
        "block": {k: v.detach().cpu() for k, v in model.block.state_dict().items()},
        "fc": {k: v.detach().cpu() for k, v in model.fc.state_dict().items()},
    }
    return head, states, test_feats


def _head_from_stage(model) -> ClassifierHead:
    """The fine-tuned classifier as a (non-standardising) ClassifierHead over tuned embeddings."""
    head = ClassifierHead(model.classifier.in_features, model.classifier.out_features, 0)
    head.net[1].load_state_dict(model.classifier.state_dict())
    return head.eval()


def save_head(result: ClassifierResult, path: str | Path) -> Path:
    """Write the head file atomically (readable with ``weights_only=True``)."""
    return save_tensor_file(path, result.checkpoint())


@dataclass
class LoadedHead:
    head: ClassifierHead
    classes: list[str]
    backbone: dict
    metrics: dict
    fine_tuned: dict | None = None


def load_head(path: str | Path) -> LoadedHead:
    """Read a head file written by :func:`save_head` (``weights_only=True``: no code is unpickled)."""
    path = Path(path)
    ckpt = load_tensor_file(path, "head")
    if not isinstance(ckpt, dict) or ckpt.get("format") != HEAD_FORMAT:
        raise UsageError(f"{path}: not a facestyle classifier head (expected format {HEAD_FORMAT})")
    arch = ckpt["arch"]
    head = ClassifierHead(arch["in_dim"], arch["n_classes"], arch["hidden"])
    head.load_state_dict(ckpt["state_dict"])
    return LoadedHead(
        head.eval(),
        list(ckpt["classes"]),
        dict(ckpt["backbone"]),
        dict(ckpt["metrics"]),
        ckpt.get("fine_tuned"),
    )


def _tuned_embeddings(loaded: LoadedHead, source: FaceFeatures, paths: list[Path]) -> np.ndarray:
    from facestyle.heads.finetune import LastStage

    model = LastStage(source.embedder.module, len(loaded.classes))
    model.block.load_state_dict(loaded.fine_tuned["block"])
    model.fc.load_state_dict(loaded.fine_tuned["fc"])
    with torch.inference_mode():
        return model.eval().embed(_stage_inputs(source, paths)).numpy()


@dataclass
class Prediction:
    """Top classes of one image; ``status`` is ``ok``, ``no_face`` or ``error`` (then ``error`` says why)."""

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


def predict_files(
    loaded: LoadedHead, paths: list[str | Path], top_k: int = 1, device: str | None = None
) -> list[Prediction]:
    """Top-``k`` classes per image, with the head's own backbone; a bad file gets a status, not a crash."""
    if top_k < 1:
        raise ParameterError("{top_k} must be at least 1", top_k=top_k)
    source = source_from_config(loaded.backbone, device=device)
    feats = source.embed([Path(p) for p in paths])
    values = feats.values.copy()
    ok = feats.ok
    if loaded.fine_tuned and ok.any():
        assert isinstance(source, FaceFeatures)
        values[ok] = _tuned_embeddings(
            loaded, source, [Path(p) for p, good in zip(paths, ok, strict=True) if good]
        )
    k = min(top_k, len(loaded.classes))
    out = []
    probs = predict_proba(loaded.head, np.nan_to_num(values)) if ok.any() else None
    for i, p in enumerate(paths):
        if not ok[i]:
            out.append(Prediction(str(p), feats.status[i], [], feats.errors[i]))
            continue
        order = np.argsort(-probs[i], kind="stable")[:k]
        out.append(Prediction(str(p), "ok", [(loaded.classes[j], float(probs[i, j])) for j in order]))
    return out
