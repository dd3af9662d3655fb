"""The trainer's mechanics on features where the answer is known: a nuisance subspace to suppress.

Identity lives in 8 dimensions; 8 more carry large per-image noise that dominates cosine similarity.
A linear head can learn to drop the noise, so held-out accuracy must rise well above the base
features', for the triplet head and for the Siamese pair head alike. (The real-data run is in
test_train_att.py; this one isolates the optimisation, early stopping and checkpoint logic.)
"""

from __future__ import annotations

import numpy as np
import pytest

from facestyle.train.trainer import EmbeddingHeadOptions, fit_embedding_head


def _features(n_ids: int, per_id: int, views: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, 8))
    labels = np.repeat(np.arange(n_ids), per_id)
    signal = centres[labels][:, None, :] + 0.15 * rng.normal(size=(len(labels), views, 8))
    noise = 2.0 * rng.normal(size=(len(labels), views, 8))
    x = np.concatenate([signal, noise], axis=2)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    return x.astype(np.float32), labels


@pytest.mark.parametrize("loss", ["triplet", "siamese"])
def test_training_learns_to_ignore_the_nuisance_subspace(loss):
    x_tr, y_tr = _features(40, 6, 2, seed=0)
    x_va, y_va = _features(12, 6, 1, seed=1)
    opts = EmbeddingHeadOptions(loss=loss, epochs=30, patience=30, lr=1e-2, p=8, k=4, seed=0)
    result = fit_embedding_head(x_tr, y_tr, x_va[:, 0], y_va, opts)
    before, best = result.before, result.best
    assert before.val_accuracy < 0.8
    assert best.val_accuracy > before.val_accuracy + 0.1
    assert best.val_loss < before.val_loss
    assert result.samples_per_second > 0 and result.best_epoch > 0
    w = result.head.net[0].weight.detach().numpy()
    # the learned map attends to the identity subspace more than to the noise
    assert np.linalg.norm(w[:, :8]) > np.linalg.norm(w[:, 8:])


def test_early_stopping_keeps_the_best_epoch():
    x_tr, y_tr = _features(40, 6, 2, seed=0)
    x_va, y_va = _features(12, 6, 1, seed=1)
    result = fit_embedding_head(
        x_tr, y_tr, x_va[:, 0], y_va, EmbeddingHeadOptions(epochs=60, patience=2, lr=1e-2, seed=0)
    )
    accs = [h.val_accuracy for h in result.history]
    assert result.best.val_accuracy == max(accs)
    if result.stopped_early:
        assert len(result.history) - 1 - result.best_epoch == 2
