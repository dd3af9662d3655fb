"""The held-out split by identity, and balanced verification pairs.

Data sets are ``DATA_DIR/<identity>/<image>`` trees (:func:`facestyle.io.folders.scan_labelled_folder`):
every sub-folder is one person. Held-out people are chosen by identity, never by image, because the
question fine-tuning must answer is "does it work on people it has not seen" (the deployment case: a
gallery of new users).
"""

from __future__ import annotations

import numpy as np

from facestyle.errors import UsageError


def split_by_identity(labels: np.ndarray, val_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out images: a random ``val_fraction`` of the identities (at least 2)."""
    ids = np.unique(labels)
    if len(ids) < 4:
        raise UsageError(f"need at least 4 identities to hold some out, found {len(ids)}")
    n_val = min(max(2, int(round(val_fraction * len(ids)))), len(ids) - 2)
    rng = np.random.default_rng(seed)
    val_ids = rng.choice(ids, size=n_val, replace=False)
    return np.isin(labels, val_ids)


def balanced_pairs(
    labels: np.ndarray, seed: int = 0, max_pairs: int = 6000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (or up to max_pairs/2) same-identity pairs and as many different-identity pairs, as (i, j, same).

    Balanced so accuracy means what it means on LFW (50% chance level); seeded so every epoch's
    held-out accuracy is measured on the same pairs.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    i, j = np.triu_indices(n, k=1)
    same = labels[i] == labels[j]
    pos = np.flatnonzero(same)
    neg = np.flatnonzero(~same)
    n_pos = min(len(pos), len(neg), max_pairs // 2)
    pos = rng.choice(pos, size=n_pos, replace=False) if len(pos) > n_pos else pos
    neg = rng.choice(neg, size=n_pos, replace=False)
    pick = np.concatenate([np.sort(pos), np.sort(neg)])
    return i[pick], j[pick], same[pick]
