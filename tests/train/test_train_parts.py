"""Sampler, heads, Siamese head and checkpoint round trip: hand-checkable behaviour, no pipeline."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from facestyle.embed.checkpoint import read_checkpoint, save_checkpoint
from facestyle.embed.heads import EmbeddingHead, SiamesePairHead
from facestyle.errors import UsageError
from facestyle.train.data import balanced_pairs, split_by_identity
from facestyle.train.sampler import PKSampler
from facestyle.train.siamese import pair_bce_loss, pairs_from_batch


def test_pk_sampler_batches_have_p_identities_times_k_images():
    labels = [0] * 5 + [1] * 3 + [2] * 10 + [3] * 1 + [4] * 4  # identity 3 has no positive: excluded
    sampler = PKSampler(labels, p=2, k=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2  # 4 eligible identities / P=2
    seen = set()
    for batch in batches:
        ids = Counter(labels[i] for i in batch)
        assert len(ids) == 2 and all(c == 4 for c in ids.values())
        seen |= set(ids)
    assert seen == {0, 1, 2, 4}
    # identity 1 has 3 images < K: sampled with repeats; the others without
    for batch in batches:
        for lab in {labels[i] for i in batch} - {1}:
            members = [i for i in batch if labels[i] == lab]
            assert len(set(members)) == 4


def test_pk_sampler_needs_two_identities():
    with pytest.raises(ValueError):
        PKSampler([0, 0, 1], p=2, k=2)


def test_identity_head_starts_as_the_base_embedding():
    x = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    head = EmbeddingHead(16)
    assert torch.allclose(head(x), x, atol=1e-6)
    out = EmbeddingHead(16, 8, hidden=32)(x)
    assert out.shape == (5, 8) and torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)


def test_siamese_head_formula_and_pair_construction():
    head = SiamesePairHead(3)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        head.linear.bias.fill_(0.25)
    f1 = torch.tensor([[1.0, 2.0, 3.0]])
    f2 = torch.tensor([[0.0, 4.0, 1.0]])
    # |d| = (1, 2, 2): 1*1 - 2*2 + 0.5*2 + 0.25 = -1.75
    assert head(f1, f2).item() == pytest.approx(-1.75)
    assert head.probability(f1, f2).item() == pytest.approx(1 / (1 + np.exp(1.75)))
    y = torch.tensor([1.0])
    assert pair_bce_loss(head, f1, f2, y).item() == pytest.approx(np.log1p(np.exp(1.75)), rel=1e-5)

    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    i, j, same = pairs_from_batch(labels, torch.Generator().manual_seed(0))
    assert int(same.sum()) == 3 and len(same) == 6  # 3 positive pairs, balanced by 3 negatives
    assert all((labels[a] == labels[b]).item() == bool(s) for a, b, s in zip(i, j, same, strict=True))


def test_untrained_siamese_head_already_ranks_same_above_different():
    head = SiamesePairHead(8)
    a = torch.nn.functional.normalize(torch.randn(1, 8), dim=1)
    near = torch.nn.functional.normalize(a + 0.05 * torch.randn(1, 8), dim=1)
    far = torch.nn.functional.normalize(torch.randn(1, 8), dim=1)
    assert head.probability(a, near).item() > head.probability(a, far).item()


def test_checkpoint_round_trip_is_weights_only(tmp_path: Path):
    head = EmbeddingHead(6, 4, hidden=5)
    pair = SiamesePairHead(4)
    path = save_checkpoint(
        tmp_path / "m.pt", base_model="dlib-resnet-v1", head=head, pair_head=pair, meta={"threshold": 0.7}
    )
    raw = torch.load(path, weights_only=True)  # would raise on any pickled object
    assert raw["format"] == "facestyle-head-checkpoint"
    ck = read_checkpoint(path)
    assert ck.base_model == "dlib-resnet-v1" and ck.meta["threshold"] == 0.7
    x = torch.randn(3, 6)
    assert torch.allclose(ck.head(x), head.eval()(x))
    assert torch.allclose(ck.pair_head.linear.weight, pair.linear.weight)


def test_foreign_or_damaged_checkpoints_are_user_errors(tmp_path: Path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="not a readable"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match="not a facestyle checkpoint"):
        read_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UsageError, match="not found"):
        read_checkpoint(tmp_path / "missing.pt")


def test_split_by_identity_never_splits_a_person():
    labels = np.repeat(np.arange(10), 3)
    mask = split_by_identity(labels, 0.3, seed=4)
    assert len(np.unique(labels[mask])) == 3
    assert not set(labels[mask]) & set(labels[~mask])


def test_balanced_pairs():
    labels = np.repeat(np.arange(4), 3)  # 4 * 3 = 12 positive pairs
    i, j, same = balanced_pairs(labels, seed=0)
    assert same.sum() == 12 and (~same).sum() == 12
    assert np.array_equal(labels[i] == labels[j], same) and (i < j).all()
