"""Image classification by transfer learning: a linear or small MLP head on frozen backbone features.

The backbone (:mod:`facestyle.heads.features`) turns every image into a vector once; the head is then
a few thousand parameters trained with cross-entropy in seconds, which is what makes "a folder per
class, a handful of images each" workable. The data set is a directory with one sub-directory per
class; a stratified held-out split (a fraction, or "N training images per class" for few-shot runs)
gives the accuracy, per-class report and confusion matrix that are stored with the head.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facestyle.errors import UsageError
from facestyle.heads.features import Backbone, backbone_from_config, extract_features
from facestyle.io.files import atomic_write, load_tensor_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
HEAD_FORMAT = "facestyle-classifier-head/1"


# ------------------------------------------------------------------------------------------- data


@dataclass
class FolderDataset:
    """Image paths and integer labels of a folder-per-class directory (classes sorted by name)."""

    root: Path
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray


def scan_folder(root: str | Path) -> FolderDataset:
    """Read ``root/<class>/<image>``; hidden files and non-image suffixes are ignored."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths: list[Path] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        paths += files
        labels += [k] * len(files)
    if len(classes) < 2 or not paths:
        raise UsageError(f"{root}: needs at least two class sub-folders with images (found {len(classes)})")
    return FolderDataset(root, classes, paths, np.asarray(labels, dtype=np.int64))


def stratified_split(
    labels: np.ndarray, test_fraction: float = 0.3, train_per_class: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with every class in both where it has >= 2 images.

    ``train_per_class`` (few-shot) takes exactly that many training images per class and tests on the
    rest; otherwise ``round(test_fraction * n)`` images per class (at least one) are held out.
    """
    if train_per_class is None and not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test fraction must be between 0 and 1, got {test_fraction}")
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
class TrainConfig:
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


def train_head(
    feats: np.ndarray, labels: np.ndarray, n_classes: int, config: TrainConfig | None = None
) -> ClassifierHead:
    """Fit a head with Adam + cross-entropy on ``(N, D)`` features (CPU; seconds for thousands of rows)."""
    cfg = config or TrainConfig()
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


def _fit(head, opt, loss_fn, x, y, cfg: TrainConfig, gen: torch.Generator) -> None:
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
class TrainResult:
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
    backbone: Backbone,
    config: TrainConfig | None = None,
    test_fraction: float = 0.3,
    train_per_class: int | None = None,
    split_seed: int = 0,
    use_cache: bool = True,
    progress: Callable | None = None,
    fine_tune_epochs: int = 0,
) -> TrainResult:
    """Scan, extract (cached), split, train, evaluate on the held-out part.

    ``fine_tune_epochs`` > 0 (dlib-resnet-v1 only) also trains the backbone's last stage with the
    classifier (:mod:`facestyle.heads.finetune`) instead of a head on frozen features.
    """
    if fine_tune_epochs and not (
        getattr(backbone, "kind", "") == "face" and backbone.name == "dlib-resnet-v1"
    ):
        raise UsageError("fine-tuning the last stage is available for the dlib-resnet-v1 backbone only")
    cfg = config or TrainConfig()
    data = scan_folder(data_dir)
    t0 = time.perf_counter()
    feats = extract_features(backbone, data.paths, use_cache=use_cache, progress=progress)
    t_feat = time.perf_counter() - t0
    usable = np.flatnonzero(feats.ok)
    skipped = [(str(data.paths[i]), feats.status[i]) for i in np.flatnonzero(~feats.ok)]
    if usable.size == 0:
        raise UsageError(f"{data_dir}: no usable image (every one failed or had no face)")
    train_idx, test_idx = stratified_split(data.labels[usable], test_fraction, train_per_class, split_seed)
    train_idx, test_idx = usable[train_idx], usable[test_idx]
    if cfg.standardize is None:
        cfg = dataclasses.replace(cfg, standardize=backbone.kind != "face")
    t1 = time.perf_counter()
    fine_tuned = None
    test_feats = feats.features[test_idx]
    if fine_tune_epochs:
        head, fine_tuned, test_feats = _fine_tune(
            backbone, data, train_idx, test_idx, fine_tune_epochs, cfg.seed
        )
    else:
        head = train_head(feats.features[train_idx], data.labels[train_idx], len(data.classes), cfg)
    t_train = time.perf_counter() - t1
    n = len(data.classes)
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
        "backbone_trained": bool(backbone.trained),
        "per_class": per_class_report(cm, data.classes),
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
    return TrainResult(head, data.classes, backbone.config, metrics, cm, skipped, fine_tuned)


def _stage_inputs(backbone: Backbone, paths: list[Path]) -> torch.Tensor:
    """Activations entering the dlib ResNet's last block, for the largest face of each image."""
    from facestyle.heads.finetune import frozen_part
    from facestyle.io.images import load_image

    chips = [backbone.chip(load_image(p)) for p in paths]
    if any(c is None for c in chips):
        raise UsageError("an image lost its face between feature extraction and fine-tuning")
    return frozen_part(np.stack(chips), backbone._pipeline().embedder.module)


def _fine_tune(backbone, data: FolderDataset, train_idx, test_idx, epochs: int, seed: int):
    """Fine-tune; returns a ClassifierHead over the tuned embeddings, the tuned states, test embeddings."""
    from facestyle.heads.finetune import fine_tune

    net = backbone._pipeline().embedder.module
    acts_train = _stage_inputs(backbone, [data.paths[i] for i in train_idx])
    model, _ = fine_tune(acts_train, data.labels[train_idx], net, len(data.classes), epochs=epochs, seed=seed)
    head = _head_from_stage(model)
    with torch.inference_mode():
        test_feats = (
            model.embed(_stage_inputs(backbone, [data.paths[i] for i in test_idx])).numpy()
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


def save_head(result: TrainResult, path: str | Path) -> Path:
    checkpoint = result.checkpoint()
    return atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


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


def _tuned_embeddings(loaded: LoadedHead, backbone: Backbone, paths: list[Path]) -> np.ndarray:
    from facestyle.heads.finetune import LastStage

    net = backbone._pipeline().embedder.module
    model = LastStage(net, len(loaded.classes))
    model.block.load_state_dict(loaded.fine_tuned["block"])
    model.fc.load_state_dict(loaded.fine_tuned["fc"])
    with torch.inference_mode():
        return model.eval().embed(_stage_inputs(backbone, paths)).numpy()


@dataclass
class Prediction:
    path: str
    status: str  # ok | no_face | error message
    top: list[tuple[str, float]]

    def to_dict(self) -> dict:
        return {
            "image": self.path,
            "status": self.status,
            "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top],
        }


def predict_files(
    loaded: LoadedHead, paths: list[str | Path], top_k: int = 1, device: str | None = None
) -> list[Prediction]:
    """Top-``k`` classes per image, with the head's own backbone; a bad file gets a status, not a crash."""
    backbone = backbone_from_config(loaded.backbone, device=device)
    feats = extract_features(backbone, [Path(p) for p in paths], use_cache=False)
    if loaded.fine_tuned and feats.ok.any():
        feats.features[feats.ok] = _tuned_embeddings(
            loaded, backbone, [Path(p) for p, ok in zip(paths, feats.ok, strict=True) if ok]
        )
    k = max(1, min(top_k, len(loaded.classes)))
    out = []
    probs = predict_proba(loaded.head, feats.features) if feats.ok.any() else None
    for i, p in enumerate(paths):
        if not feats.ok[i]:
            out.append(Prediction(str(p), feats.status[i], []))
            continue
        order = np.argsort(-probs[i], kind="stable")[:k]
        out.append(Prediction(str(p), "ok", [(loaded.classes[j], float(probs[i, j])) for j in order]))
    return out
