"""What docs/training.md claims fine-tuning does, measured on people used neither for training nor for
early stopping (a third split), as benchmarks/finetune_experiment.py does.

The claim tested: on a domain the base model has not seen (AT&T shrunk to 15x18 px and blown back up),
a triplet-trained linear head helps unseen people. Measured with five seeds (the seed draws the
early-stopping people, the batches and the augmentations): 10-fold accuracy 84.68% -> 89.3-91.0%, ROC
AUC 0.939 -> 0.961-0.975; this test runs seed 0 (89.57%, 0.9711). The other claims of the docs (LFW:
no gain, early stopping keeps the base model; full-resolution AT&T: it hurts) need the whole
DevTrain set or more people than a test should spend on, and live in the benchmark.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facestyle.api import FacePipeline
from facestyle.eval.pairs_eval import evaluate_pairs
from facestyle.eval.pairs_file import read_pairs
from facestyle.io.images import load_image
from facestyle.train.embedding_head import train_embedding_head
from facestyle.train.trainer import EmbeddingHeadOptions

SCALE = 6


def _low_resolution_tree(att: Path, root: Path) -> tuple[Path, Path]:
    """train/ = s1-s30 and test/ = s31-s40, every photo shrunk SCALE times and blown back up."""
    for part, ids in (("train", range(1, 31)), ("test", range(31, 41))):
        for s in ids:
            folder = root / part / f"s{s}"
            folder.mkdir(parents=True)
            for i in range(1, 11):
                grey = load_image(att / f"s{s}" / f"{i}.pgm")[:, :, 0]
                small = cv2.resize(grey, (92 // SCALE, 112 // SCALE), interpolation=cv2.INTER_AREA)
                cv2.imwrite(
                    str(folder / f"{i}.png"), cv2.resize(small, (92, 112), interpolation=cv2.INTER_CUBIC)
                )
    return root / "train", root / "test"


def _test_pairs(test: Path, out: Path) -> Path:
    """Every same-person pair of the test people and as many random different-person pairs."""
    files = sorted(test.rglob("*.png"))
    who = np.array([p.parent.name for p in files])
    i, j = np.triu_indices(len(files), k=1)
    same = who[i] == who[j]
    neg = np.sort(np.random.default_rng(0).choice(np.flatnonzero(~same), size=int(same.sum()), replace=False))
    rows = [(files[a], files[b], 1) for a, b in zip(i[same], j[same], strict=True)]
    rows += [(files[i[k]], files[j[k]], 0) for k in neg]
    out.write_text("path1,path2,same\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows))
    return out


@pytest.mark.slow
def test_a_head_trained_on_an_unseen_domain_helps_unseen_people(att_dir: Path, tmp_path: Path) -> None:
    train_dir, test_dir = _low_resolution_tree(att_dir, tmp_path / "data")
    pairs = read_pairs(_test_pairs(test_dir, tmp_path / "pairs.csv"))
    # Measured with the detector alone (before issue 20's crop="auto" found faces in 33 more pairs of
    # these low-resolution photos); the claim is kept on the same pairs.
    base = FacePipeline("dlib-resnet-v1", crop="detect").features(face="central")
    before = evaluate_pairs(pairs, base)
    opts = EmbeddingHeadOptions(epochs=40, patience=8, views=4, seed=0)
    run = train_embedding_head(train_dir, tmp_path / "head.pt", opts, base)
    after = evaluate_pairs(
        pairs, FacePipeline(str(tmp_path / "head.pt"), crop="detect").features(face="central")
    )
    trained_on = {Path(p).parent.name for p in sorted(train_dir.rglob("*.png"))}
    assert not trained_on & {p.path1.parent.name for p in pairs.pairs}  # the test people are unseen
    assert run.result.best_epoch > 0 and before.n_pairs == after.n_pairs == 867
    # Measured at seed 0: 84.68% -> 89.57%, AUC 0.9394 -> 0.9711, EER 14.52% -> 9.70%. Over five seeds
    # the smallest gains were +4.6 points and +0.022 AUC; the floors leave room for float differences.
    assert before.accuracy == pytest.approx(0.8468, abs=0.003)
    assert after.accuracy > before.accuracy + 0.03
    assert after.auc > before.auc + 0.015
    assert after.eer < before.eer - 0.02
