"""``facestyle train`` as a library call: folder of identities in, checkpoint (and curve) out.

:func:`train_embedding_head` trains a small head on a *frozen* embedder (triplet loss, or a Siamese
pair head). Steps: scan the folder, hold out a share of the identities, embed every image's augmented
views with the frozen base model (the feature service caches them), fit the head
(:func:`facestyle.train.trainer.fit_embedding_head`), and save a checkpoint that records the base model,
the options, the before/after metrics and the held-out threshold. Images without a detectable face are
left out and counted. (Fine-tuning the *network's* last stage for a classifier is another algorithm:
:func:`facestyle.heads.finetune.tune_last_stage`.)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facestyle.embed.checkpoint import CheckpointEmbedder, save_checkpoint
from facestyle.embed.embedder import tap_layer
from facestyle.embed.features import FaceFeatures
from facestyle.errors import ParameterError, UsageError
from facestyle.io.folders import LabelledImages, scan_labelled_folder
from facestyle.io.progress import Progress, no_progress
from facestyle.train.augment import AugmentOptions, chip_views
from facestyle.train.data import split_by_identity
from facestyle.train.trainer import EmbeddingHeadOptions, EmbeddingHeadResult, EpochRecord, fit_embedding_head


@dataclass
class EmbeddingHeadRun:
    """What :func:`train_embedding_head` did: the fit, the checkpoint written and the data it used."""

    result: EmbeddingHeadResult
    checkpoint: Path | None
    n_train_images: int
    n_val_images: int
    n_train_identities: int
    n_val_identities: int
    n_no_face: int
    feature_seconds: float
    chips_embedded: int

    def to_dict(self) -> dict:
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
    data: LabelledImages, features: FaceFeatures, opts: EmbeddingHeadOptions, progress: Progress = no_progress
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Split by identity and compute (cached) views: train (N, V, D) + labels, held-out (M, D) + labels."""
    val_mask = split_by_identity(data.labels, opts.val_fraction, opts.seed)
    train, val = data.subset(~val_mask), data.subset(val_mask)
    aug = AugmentOptions() if opts.augment else AugmentOptions(flip=False, crop_scale=1.0)
    views = opts.views if opts.augment else 1
    t0 = time.perf_counter()
    tap = opts.tap or None

    def table(paths: list[Path], n_views: int):
        return features.views(
            paths,
            lambda chip, rng: chip_views(chip, n_views, rng, aug),
            n_views=n_views,
            variant=repr(aug),
            seed=opts.seed,
            tap=tap,
            progress=progress,
        )

    tr, va = table(train.paths, views), table(val.paths, 1)
    info = {
        "n_no_face": int((~tr.ok).sum() + (~va.ok).sum()),
        "feature_seconds": time.perf_counter() - t0,
        "chips_embedded": tr.computed * views + va.computed,
        "n_train_identities": len(np.unique(train.labels[tr.ok])),
        "n_val_identities": len(np.unique(val.labels[va.ok])),
    }
    return tr.values[tr.ok], train.labels[tr.ok], va.values[va.ok][:, 0], val.labels[va.ok], info


def train_embedding_head(
    data_dir: str | Path,
    out: str | Path | None,
    opts: EmbeddingHeadOptions,
    features: FaceFeatures,
    progress: Progress = no_progress,
    on_epoch: Any = None,
) -> EmbeddingHeadRun:
    """Train a head on ``features.embedder`` (frozen) with the identities of ``data_dir``; write the
    checkpoint ``out`` unless it is None. ``features`` is the pipeline's feature service (its detector,
    embedder and face choice, e.g. ``FacePipeline(model).features(face="central")``)."""
    opts.validate()
    embedder = features.embedder
    if isinstance(embedder, CheckpointEmbedder):
        raise UsageError("train a head on a registered model, not on a checkpoint")
    if opts.tap and (opts.hidden or opts.out_dim):
        raise ParameterError(
            "{tap} trains the network's own layer, which fixes the head's shape: no {hidden} or {out_dim}",
            tap=opts.tap,
            hidden=opts.hidden,
            out_dim=opts.out_dim,
        )
    data = scan_labelled_folder(data_dir)
    x_tr, y_tr, x_va, y_va, info = prepare_features(data, features, opts, progress)
    if len(np.unique(y_va)) < 2 or len(np.unique(y_tr)) < 2:
        raise UsageError("too few identities with detectable faces in training or held-out data")
    init = tap_layer(embedder, opts.tap).weight.detach().cpu().numpy() if opts.tap else None
    result = fit_embedding_head(x_tr, y_tr, x_va, y_va, opts, on_epoch=on_epoch, init_weight=init)
    run = EmbeddingHeadRun(
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
        meta = {
            "created_at": time.time(),
            "base_version": embedder.version,
            "detector": features.detector.name,
            "data_dir": str(Path(data_dir).resolve()),
            "options": asdict(opts),
            "metrics": run.to_dict(),
            # The held-out best threshold of the kept epoch: the checkpoint's default threshold.
            "threshold": result.best.threshold,
            "tap": opts.tap or None,
            "threshold_source": f"best accuracy threshold on {len(y_va)} held-out images' balanced pairs",
        }
        run.checkpoint = save_checkpoint(
            out, base_model=embedder.name, head=result.head, pair_head=result.pair_head, meta=meta
        )
    return run


__all__ = ["EmbeddingHeadRun", "EpochRecord", "prepare_features", "train_embedding_head"]
