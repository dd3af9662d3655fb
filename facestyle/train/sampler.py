"""P x K batch sampling: P identities, K images each, so every batch holds positives and negatives.

Triplet mining needs at least two images of an identity and at least two identities in a batch; a
uniformly random batch from a dataset of many identities with few images each has almost no positive
pairs. Identities with fewer than two images cannot give a positive and are left out. An identity with
fewer than K images contributes all of them plus repeats drawn at random (the augmentation makes the
repeats differ), as Hermans et al. do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np


class PKSampler:
    """Yields lists of dataset indices, P identities x K images per batch; one pass is one epoch.

    An epoch visits every eligible identity once (in a random order), in batches of P identities; the
    last, smaller group is dropped when it has fewer than two identities (no negatives).
    """

    def __init__(self, labels: Sequence[int], p: int = 8, k: int = 4, seed: int = 0) -> None:
        if p < 2 or k < 2:
            raise ValueError("P and K must both be at least 2 (negatives and positives are needed)")
        by_id: dict[int, list[int]] = defaultdict(list)
        for i, lab in enumerate(labels):
            by_id[int(lab)].append(i)
        self.groups = {lab: idx for lab, idx in by_id.items() if len(idx) >= 2}
        if len(self.groups) < 2:
            raise ValueError("need at least two identities with two or more images each")
        self.p, self.k = min(p, len(self.groups)), k
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.groups)
        full, rest = divmod(n, self.p)
        return full + (1 if rest >= 2 else 0)

    def __iter__(self) -> Iterator[list[int]]:
        ids = list(self.groups)
        self.rng.shuffle(ids)
        for start in range(0, len(ids), self.p):
            chosen = ids[start : start + self.p]
            if len(chosen) < 2:
                break
            batch: list[int] = []
            for lab in chosen:
                members = self.groups[lab]
                replace = len(members) < self.k
                batch.extend(int(i) for i in self.rng.choice(members, size=self.k, replace=replace))
            yield batch
