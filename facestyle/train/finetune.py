"""``facestyle train`` as a library call: folder of identities in, checkpoint (and curve) out.

Steps: scan the folder, hold out a share of the identities, detect/align/embed every image's views
with the frozen base model (cached), train the head (:mod:`facestyle.train.trainer`), and save a
checkpoint that records the base model, the options, the before/after metrics and the held-out
threshold. Images without a detectable face are left out and counted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facestyle.errors import UsageError
from facestyle.train.augment import AugmentOptions
from facestyle.train.checkpoint import save_checkpoint
from facestyle.train.data import IdentityDataset, scan_identity_dir, split_by_identity
from facestyle.train.features import FaceExtractor, ProgressFn, _no_progress, tap_layer, view_features
from facestyle.train.trainer import EpochRecord, TrainOptions, TrainResult, train_head


@dataclass
class FineTuneRun:
    result: TrainResult
    checkpoint: Path | None
    n_train_images: int
    n_val_images: int
    n_train_identities: int
    n_val_identities: int
    n_no_face: int
    feature_seconds: float
    chips_embedded: int

    def summary(self) -> dict:
        return {
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "train_images": self.n_train_images,
            "val_images": self.n_val_images,
            "train_identities": self.n_train_identities,
            "val_identities": self.n_val_identities,
            "no_face_images": self.n_no_face,
            "feature_seconds": self.feature_seconds,
            "chips_embedded": self.chips_embedded,
            "options": asdict(self.result.options),
            **self.result.metrics(),
        }


def prepare_features(
    data: IdentityDataset, extractor: FaceExtractor, opts: TrainOptions, progress: ProgressFn = _no_progress
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Split by identity and compute (cached) views: train (N, V, D) + labels, held-out (M, D) + labels."""
    val_mask = split_by_identity(data.labels, opts.val_fraction, opts.seed)
    train, val = data.subset(~val_mask), data.subset(val_mask)
    aug = AugmentOptions() if opts.augment else AugmentOptions(flip=False, crop_scale=1.0)
    views = opts.views if opts.augment else 1
    t0 = time.perf_counter()
    tap = opts.tap or None
    tr = view_features(train.paths, extractor, views, opts.seed, aug, progress, tap=tap)
    va = view_features(val.paths, extractor, 1, opts.seed, aug, progress, tap=tap)
    info = {
        "n_no_face": int((~tr.ok).sum() + (~va.ok).sum()),
        "feature_seconds": time.perf_counter() - t0,
        "chips_embedded": tr.chips_embedded + va.chips_embedded,
        "n_train_identities": len(np.unique(train.labels[tr.ok])),
        "n_val_identities": len(np.unique(val.labels[va.ok])),
    }
    return tr.features[tr.ok], train.labels[tr.ok], va.features[va.ok][:, 0], val.labels[va.ok], info


def fine_tune(
    data_dir: str | Path,
    out: str | Path | None,
    opts: TrainOptions,
    extractor: FaceExtractor,
    progress: ProgressFn = _no_progress,
    on_epoch: Any = None,
) -> FineTuneRun:
    """Run a whole fine-tune; writes ``out`` (a checkpoint) unless it is None."""
    opts.validate()
    data = scan_identity_dir(data_dir)
    x_tr, y_tr, x_va, y_va, info = prepare_features(data, extractor, opts, progress)
    if len(np.unique(y_va)) < 2 or len(np.unique(y_tr)) < 2:
        raise UsageError("too few identities with detectable faces in training or held-out data")
    init = None
    if opts.tap:
        if opts.hidden or opts.out_dim:
            raise UsageError("--train-last-layer trains the backbone's own layer: no --hidden/--out-dim")
        init = tap_layer(extractor.embedder, opts.tap).weight.detach().cpu().numpy()
    result: TrainResult = train_head(x_tr, y_tr, x_va, y_va, opts, on_epoch=on_epoch, init_weight=init)
    run = FineTuneRun(
        result,
        None,
        len(y_tr),
        len(y_va),
        info["n_train_identities"],
        info["n_val_identities"],
        info["n_no_face"],
        info["feature_seconds"],
        info["chips_embedded"],
    )
    if out is not None:
        emb = extractor.embedder
        meta = {
            "created_at": time.time(),
            "base_version": getattr(emb, "version", emb.name),
            "detector": getattr(extractor.detector, "name", "?"),
            "data_dir": str(Path(data_dir).resolve()),
            "options": asdict(opts),
            "metrics": run.summary(),
            # The held-out best threshold of the kept epoch: the checkpoint's default threshold.
            "threshold": result.best.threshold,
            "tap": opts.tap or None,
            "threshold_source": f"best accuracy threshold on {len(y_va)} held-out images' balanced pairs",
        }
        run.checkpoint = save_checkpoint(
            out, base_model=_base_name(emb), head=result.head, pair_head=result.pair_head, meta=meta
        )
    return run


def _base_name(embedder: Any) -> str:
    """The registry name to rebuild the base model from (a checkpoint on a checkpoint is not supported)."""
    if hasattr(embedder, "base_name"):
        raise UsageError("fine-tune from a registered model, not from a checkpoint")
    return embedder.name


__all__ = ["EpochRecord", "FineTuneRun", "fine_tune", "prepare_features"]
