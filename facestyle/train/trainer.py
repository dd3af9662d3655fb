"""Train an embedding head (triplet loss) or a Siamese pair head (BCE) on cached backbone features.

The backbone is frozen and its embeddings of every augmented view are computed once
(:meth:`facestyle.embed.features.FaceFeatures.views`); an epoch then only runs the small head, so CPU
training is seconds, not hours. Each step draws a P x K batch of training identities and, per image, one
of its cached views (the augmentation). After every epoch the head is measured on the held-out
identities (never seen in training): the mean triplet loss over the held-out set and the LFW-style
10-fold verification accuracy on balanced held-out pairs. Epoch 0 is the untrained head (the base
model itself with the identity initialisation), so "before" and "after" come from the same code and
the same pairs. Training stops when held-out accuracy has not improved for ``patience`` epochs, and the
best epoch's weights are kept: a fine-tune that does not help returns the base model unchanged.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from facestyle.embed.heads import EmbeddingHead, SiamesePairHead
from facestyle.errors import ParameterError
from facestyle.eval import metrics
from facestyle.train.data import balanced_pairs
from facestyle.train.losses import mined_triplet_loss
from facestyle.train.sampler import PKSampler
from facestyle.train.siamese import pair_bce_loss, pairs_from_batch


@dataclass
class EmbeddingHeadOptions:
    """Everything that defines a run of :func:`fit_embedding_head`; stored verbatim in the checkpoint."""

    loss: str = "triplet"  # "triplet" | "siamese"
    mining: str = "batch-hard"  # "batch-hard" | "semi-hard"
    margin: float = 0.2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 30
    p: int = 8
    k: int = 4
    batches_per_epoch: int = 0  # 0: one pass over the training identities
    patience: int = 5
    val_fraction: float = 0.2
    hidden: int = 0
    out_dim: int = 0  # 0: same as the base embedding
    views: int = 4
    augment: bool = True
    seed: int = 0
    #: "fc": also train the backbone's final linear layer (its inputs are cached instead of embeddings).
    tap: str = ""

    def validate(self) -> None:
        """A one-line :class:`ParameterError` for the first option out of range."""
        if self.loss not in ("triplet", "siamese"):
            raise ParameterError("{loss} is not a loss; use triplet or siamese", loss=self.loss)
        if self.mining not in ("batch-hard", "semi-hard"):
            raise ParameterError(
                "{mining} is not a mining rule; use batch-hard or semi-hard", mining=self.mining
            )
        for name in ("epochs", "p", "k", "views"):
            least = 2 if name in ("p", "k") else 1
            if getattr(self, name) < least:
                raise ParameterError(
                    f"{{{name}}} is too small (at least {least})", **{name: getattr(self, name)}
                )
        if not 0 < self.val_fraction < 1:
            raise ParameterError("{val_fraction} must be between 0 and 1", val_fraction=self.val_fraction)
        if not self.lr > 0:
            raise ParameterError("{lr} must be positive", lr=self.lr)
        if not self.margin >= 0:
            raise ParameterError("{margin} must be at least 0", margin=self.margin)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_accuracy_std: float
    val_auc: float
    threshold: float
    seconds: float


@dataclass
class EmbeddingHeadResult:
    """A trained head (its best held-out epoch's weights) and the per-epoch record."""

    head: EmbeddingHead
    pair_head: SiamesePairHead | None
    history: list[EpochRecord]
    best_epoch: int
    samples_per_second: float
    stopped_early: bool
    options: EmbeddingHeadOptions
    extra: dict = field(default_factory=dict)

    @property
    def before(self) -> EpochRecord:
        return self.history[0]

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch]

    def metrics(self) -> dict:
        """JSON-able summary for the checkpoint and ``--json``."""
        return {
            "before": asdict(self.before),
            "after": asdict(self.best),
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history) - 1,
            "stopped_early": self.stopped_early,
            "samples_per_second": self.samples_per_second,
            "history": [asdict(h) for h in self.history],
            **self.extra,
        }


@torch.no_grad()
def evaluate_head(
    head: EmbeddingHead,
    pair_head: SiamesePairHead | None,
    feats: torch.Tensor,
    labels: torch.Tensor,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    opts: EmbeddingHeadOptions,
) -> tuple[float, float, float, float, float]:
    """(held-out triplet loss, 10-fold accuracy, its std, AUC, best threshold) of the current heads."""
    head.eval()
    emb = head(feats)
    loss = mined_triplet_loss(emb, labels, opts.margin, opts.mining).loss.item()
    i, j, same = pairs
    if pair_head is not None:
        pair_head.eval()
        scores = pair_head.probability(emb[i], emb[j]).numpy().astype(np.float64)
    else:
        scores = (emb[i] * emb[j]).sum(dim=1).numpy().astype(np.float64)
    kf = metrics.kfold_accuracy(scores, same)
    auc = metrics.auc(metrics.roc_curve(scores, same))
    thr, _ = metrics.best_threshold(scores, same)
    return loss, kf.mean, kf.std, auc, thr


def fit_embedding_head(
    train_feats: np.ndarray,
    train_labels: np.ndarray,
    val_feats: np.ndarray,
    val_labels: np.ndarray,
    opts: EmbeddingHeadOptions,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    init_weight: np.ndarray | None = None,
) -> EmbeddingHeadResult:
    """Train on (N, V, D) cached views; validate on (M, D) unaugmented held-out embeddings.

    ``init_weight`` (out, in) starts a single-layer head from a backbone layer's weights (with
    ``opts.tap``), so that, as with the identity start, epoch 0 is exactly the base model.
    """
    opts.validate()
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    dim = train_feats.shape[-1]
    if init_weight is not None:
        head = EmbeddingHead(dim, init_weight.shape[0], 0, init="random")
        with torch.no_grad():
            head.net[0].weight.copy_(torch.from_numpy(np.asarray(init_weight, dtype=np.float32)))
            head.net[0].bias.zero_()
    else:
        head = EmbeddingHead(dim, opts.out_dim or dim, opts.hidden)
    pair_head = SiamesePairHead(head.out_dim) if opts.loss == "siamese" else None
    params = list(head.parameters()) + (list(pair_head.parameters()) if pair_head else [])
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    sampler = PKSampler(train_labels, opts.p, opts.k, seed=opts.seed)
    n_views = train_feats.shape[1] if opts.augment else 1
    tf = torch.from_numpy(np.ascontiguousarray(train_feats))
    vf = torch.from_numpy(np.ascontiguousarray(val_feats))
    vl = torch.from_numpy(np.asarray(val_labels))
    tl = torch.from_numpy(np.asarray(train_labels))
    val_pairs = balanced_pairs(np.asarray(val_labels), seed=opts.seed)

    def record(epoch: int, train_loss: float, seconds: float) -> EpochRecord:
        vloss, acc, std, auc, thr = evaluate_head(head, pair_head, vf, vl, val_pairs, opts)
        rec = EpochRecord(epoch, train_loss, vloss, acc, std, auc, thr, seconds)
        if on_epoch:
            on_epoch(rec)
        return rec

    history = [record(0, float("nan"), 0.0)]
    best_epoch, best_state = (
        0,
        (copy.deepcopy(head.state_dict()), pair_head and copy.deepcopy(pair_head.state_dict())),
    )
    samples, train_seconds, since_best, stopped = 0, 0.0, 0, False
    for epoch in range(1, opts.epochs + 1):
        head.train()
        if pair_head:
            pair_head.train()
        t0 = time.perf_counter()
        losses = []
        n_batches = opts.batches_per_epoch or len(sampler)
        it = iter(sampler)
        for _ in range(n_batches):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(sampler)
                batch = next(it)
            idx = torch.as_tensor(batch)
            view = torch.from_numpy(rng.integers(0, n_views, size=len(batch)))
            emb = head(tf[idx, view])
            labels = tl[idx]
            if pair_head is None:
                loss = mined_triplet_loss(emb, labels, opts.margin, opts.mining).loss
            else:
                i, j, y = pairs_from_batch(labels, gen)
                loss = pair_bce_loss(pair_head, emb[i], emb[j], y)
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(loss.item())
            samples += len(batch)
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        rec = record(epoch, float(np.mean(losses)), seconds)
        history.append(rec)
        best = history[best_epoch]
        if rec.val_accuracy > best.val_accuracy or (
            rec.val_accuracy == best.val_accuracy and rec.val_loss < best.val_loss
        ):
            best_epoch, since_best = epoch, 0
            best_state = (
                copy.deepcopy(head.state_dict()),
                pair_head and copy.deepcopy(pair_head.state_dict()),
            )
        else:
            since_best += 1
            if since_best >= opts.patience:
                stopped = True
                break
    head.load_state_dict(best_state[0])
    head.eval()
    if pair_head is not None:
        pair_head.load_state_dict(best_state[1])
        pair_head.eval()
    return EmbeddingHeadResult(
        head=head,
        pair_head=pair_head,
        history=history,
        best_epoch=best_epoch,
        samples_per_second=samples / train_seconds if train_seconds > 0 else float("nan"),
        stopped_early=stopped,
        options=opts,
    )
