"""Triplet loss and mining against hand-computed cases and a brute-force reference."""

from __future__ import annotations

import itertools

import pytest
import torch

from facestyle.train.losses import (
    batch_hard_triplet_loss,
    mine_batch_hard,
    mine_semi_hard,
    mined_triplet_loss,
    pairwise_distances,
    semi_hard_triplet_loss,
    triplet_loss,
)

# Four 1-D points, two identities. Distances: d01=1, d02=3, d03=0.4, d12=2, d13=0.6, d23=2.6.
X = torch.tensor([[0.0], [1.0], [3.0], [0.4]])
Y = torch.tensor([0, 0, 1, 1])


def test_pairwise_distances_hand_values():
    d = pairwise_distances(X)
    expected = torch.tensor(
        [[0.0, 1.0, 3.0, 0.4], [1.0, 0.0, 2.0, 0.6], [3.0, 2.0, 0.0, 2.6], [0.4, 0.6, 2.6, 0.0]]
    )
    assert torch.allclose(d, expected, atol=1e-6)
    assert torch.allclose(pairwise_distances(X, squared=True), expected**2, atol=1e-5)


def test_pairwise_distance_gradient_is_finite_for_duplicates():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    pairwise_distances(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_explicit_triplet_loss_hand_values():
    a = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])  # d(a,p) = 5, 1
    n = torch.tensor([[0.0, 4.0], [0.0, 2.0]])  # d(a,n) = 4, 2
    # max(5 - 4 + 0.5, 0) = 1.5 ; max(1 - 2 + 0.5, 0) = 0
    assert torch.allclose(
        triplet_loss(a, p, n, margin=0.5, reduction="none"), torch.tensor([1.5, 0.0]), atol=1e-5
    )
    assert triplet_loss(a, p, n, margin=0.5).item() == pytest.approx(0.75, abs=1e-5)
    # squared: max(25 - 16 + 0.5, 0) = 9.5 ; max(1 - 4 + 0.5, 0) = 0
    assert triplet_loss(a, p, n, margin=0.5, squared=True).item() == pytest.approx(4.75, abs=1e-4)


def test_batch_hard_mining_and_loss_hand_computed():
    trip = mine_batch_hard(pairwise_distances(X), Y)
    assert trip.anchor.tolist() == [0, 1, 2, 3]
    assert trip.positive.tolist() == [1, 0, 3, 2]
    # closest negatives: for 0 -> 3 (0.4), 1 -> 3 (0.6), 2 -> 1 (2.0), 3 -> 0 (0.4)
    assert trip.negative.tolist() == [3, 3, 1, 0]
    # losses: 1-0.4+0.2=0.8, 1-0.6+0.2=0.6, 2.6-2+0.2=0.8, 2.6-0.4+0.2=2.4 -> mean 1.15
    assert batch_hard_triplet_loss(X, Y, margin=0.2).item() == pytest.approx(1.15, abs=1e-5)


def test_batch_hard_picks_the_farthest_positive_and_skips_lonely_anchors():
    x = torch.tensor([[0.0], [1.0], [2.5], [3.0], [10.0]])
    y = torch.tensor([0, 0, 0, 1, 2])  # identity 1 and 2 have no positive: not anchors
    trip = mine_batch_hard(pairwise_distances(x), y)
    assert trip.anchor.tolist() == [0, 1, 2]
    # farthest positive: anchor 0: 1 (1.0), 2 (2.5) -> 2; anchor 1: 0 (1.0), 2 (1.5) -> 2;
    # anchor 2: 0 (2.5), 1 (1.5) -> 0
    assert trip.positive.tolist() == [2, 2, 0]
    assert trip.negative.tolist() == [3, 3, 3]


def test_semi_hard_mining_hand_computed():
    trip = mine_semi_hard(pairwise_distances(X), Y)
    got = sorted(zip(trip.anchor.tolist(), trip.positive.tolist(), trip.negative.tolist(), strict=True))
    # (0,1): d_ap=1, negatives 2 (3.0), 3 (0.4): farther than 1 -> 2
    # (1,0): d_ap=1, negatives 2 (2.0), 3 (0.6): farther -> 2
    # (2,3): d_ap=2.6, negatives 0 (3.0), 1 (2.0): farther -> 0
    # (3,2): d_ap=2.6, negatives 0 (0.4), 1 (0.6): none farther -> farthest, 1
    assert got == [(0, 1, 2), (1, 0, 2), (2, 3, 0), (3, 2, 1)]
    # margin 0.5: losses 0, 0, max(2.6-3+0.5,0)=0.1, 2.6-0.6+0.5=2.5 -> mean 0.65
    assert semi_hard_triplet_loss(X, Y, margin=0.5).item() == pytest.approx(0.65, abs=1e-5)
    stats = mined_triplet_loss(X, Y, margin=0.5, strategy="semi-hard")
    assert stats.n_triplets == 4 and stats.active_fraction == pytest.approx(0.5)


def _brute_force(x: torch.Tensor, y: torch.Tensor, margin: float, strategy: str) -> float:
    """Loops over every triplet, with the definitions written out longhand."""
    d = torch.cdist(x.double(), x.double())
    losses = []
    n = len(y)
    for a in range(n):
        pos = [p for p in range(n) if p != a and y[p] == y[a]]
        neg = [m for m in range(n) if y[m] != y[a]]
        if not pos or not neg:
            continue
        if strategy == "batch-hard":
            losses.append(max(max(d[a, p] for p in pos) - min(d[a, m] for m in neg) + margin, 0.0))
            continue
        for p in pos:
            farther = [d[a, m] for m in neg if d[a, m] > d[a, p]]
            dn = min(farther) if farther else max(d[a, m] for m in neg)
            losses.append(max(d[a, p] - dn + margin, 0.0))
    return float(sum(losses) / len(losses))


@pytest.mark.parametrize("strategy", ["batch-hard", "semi-hard"])
def test_mined_loss_matches_brute_force_on_unit_vectors(strategy):
    gen = torch.Generator().manual_seed(3)
    x = torch.nn.functional.normalize(torch.randn(24, 8, generator=gen), dim=1)
    y = torch.tensor([i // 4 for i in range(24)])
    got = mined_triplet_loss(x, y, margin=0.2, strategy=strategy).loss.item()
    assert got == pytest.approx(_brute_force(x, y, 0.2, strategy), abs=1e-5)
    assert got > 0


def test_gradient_moves_positive_closer_and_negative_away():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    batch_hard_triplet_loss(x, y, margin=0.2).backward()
    # anchor 0: positive 1 pulls it towards +x, negative 2 (also +x) pushes it towards -x; for anchor 0
    # the net effect must shrink d(0,1) - d(0,2) after one small step.
    with torch.no_grad():
        stepped = x - 0.01 * x.grad
        before = [float(torch.dist(x[0], x[1]) - torch.dist(x[0], x[2]))]
        after = [float(torch.dist(stepped[0], stepped[1]) - torch.dist(stepped[0], stepped[2]))]
    assert after[0] < before[0]


def test_all_triplet_counts_agree_with_combinatorics():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    x = torch.randn(6, 3)
    trip = mine_semi_hard(pairwise_distances(x), y)
    expected = sum(1 for a, p in itertools.permutations(range(6), 2) if y[a] == y[p])
    assert len(trip) == expected == 8
