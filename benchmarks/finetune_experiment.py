"""Does fine-tuning help? Before/after on people that neither training nor early stopping saw.

Three disjoint sets of people: the head is trained on some, early stopping watches others (the
``train`` command's own held-out split), and the before/after numbers come from a third set through
``eval pairs``, with the base model and with the checkpoint, on the same pairs.

Datasets:

- ``att``: AT&T, people s1-s30 for training, s31-s40 for the test (all 450 same-person pairs and 450
  random different-person pairs).
- ``att-lowres``: the same split, every image shrunk by ``--scale`` (area averaging) and blown back up
  to 92x112 (bicubic): grey, blurry faces far from dlib's training data.
- ``lfw``: LFW View 1, training on every image of the people in ``pairsDevTrain.txt``, test on
  ``pairsDevTest.txt`` (the two views share no people).

Usage::

    python benchmarks/finetune_experiment.py att-lowres --scale 6 [--loss triplet] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facestyle.api import FacePipeline  # noqa: E402
from facestyle.eval.pairs_eval import evaluate_pairs  # noqa: E402
from facestyle.eval.pairs_file import read_pairs  # noqa: E402
from facestyle.train.embedding_head import train_embedding_head  # noqa: E402
from facestyle.train.trainer import EmbeddingHeadOptions  # noqa: E402


def _att_tree(att: Path, work: Path, scale: int) -> tuple[Path, Path]:
    """train/ (s1-s30) and test/ (s31-s40) trees: symlinks, or degraded PNG copies when scale > 1."""
    import cv2

    from facestyle.io.images import load_image

    for part, ids in (("train", range(1, 31)), ("test", range(31, 41))):
        for s in ids:
            folder = work / part / f"s{s}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, 11):
                src = att / f"s{s}" / f"{i}.pgm"
                if scale <= 1:
                    dst = folder / f"{i}.pgm"
                    if not dst.exists():
                        dst.symlink_to(src)
                    continue
                img = load_image(src)[:, :, 0]
                small = cv2.resize(img, (92 // scale, 112 // scale), interpolation=cv2.INTER_AREA)
                cv2.imwrite(
                    str(folder / f"{i}.png"), cv2.resize(small, (92, 112), interpolation=cv2.INTER_CUBIC)
                )
    return work / "train", work / "test"


def _att_test_pairs(test: Path, out: Path, seed: int = 0) -> Path:
    files = sorted(p for p in test.rglob("*") if p.is_file() or p.is_symlink())
    ident = np.array([p.parent.name for p in files])
    i, j = np.triu_indices(len(files), k=1)
    same = ident[i] == ident[j]
    rng = np.random.default_rng(seed)
    neg = rng.choice(np.flatnonzero(~same), size=int(same.sum()), replace=False)
    rows = [(files[a], files[b], 1) for a, b in zip(i[same], j[same], strict=True)]
    rows += [(files[i[k]], files[j[k]], 0) for k in np.sort(neg)]
    out.write_text("path1,path2,same\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows))
    return out


def _lfw_tree(lfw: Path, work: Path) -> Path:
    names = set()
    for line in (lfw / "pairsDevTrain.txt").read_text().splitlines()[1:]:
        tok = line.split()
        names.update(tok[0::2] if len(tok) == 4 else tok[:1])
    train = work / "train"
    for name in sorted(names):
        src = lfw / "images" / name
        if src.is_dir() and not (train / name).exists():
            train.mkdir(parents=True, exist_ok=True)
            (train / name).symlink_to(src)
    return train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", choices=["att", "att-lowres", "lfw"])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=None, help="Where datasets/checkpoints go (default: temp)")
    ap.add_argument("--scale", type=int, default=6)
    ap.add_argument("--loss", default="triplet")
    ap.add_argument("--mining", default="batch-hard")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="split, sampling and augmentation seed")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--train-last-layer", action="store_true", help="also train the backbone's fc layer")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None, help="training curve PNG")
    ap.add_argument("--roc", type=Path, default=None, help="before/after ROC PNG")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix=f"finetune-{args.dataset}-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.dataset == "lfw":
        lfw = args.data / "faces" / "lfw-view1"
        train_dir = _lfw_tree(lfw, work)
        pairs = read_pairs(lfw / "pairsDevTest.txt", lfw / "images")
    else:
        scale = args.scale if args.dataset == "att-lowres" else 1
        train_dir, test_dir = _att_tree(args.data / "faces" / "att", work / f"scale{scale}", scale)
        pairs = read_pairs(_att_test_pairs(test_dir, work / f"test-pairs-scale{scale}.csv"))

    base = FacePipeline("dlib-resnet-v1").features(face="central")
    before = evaluate_pairs(pairs, base)
    opts = EmbeddingHeadOptions(
        loss=args.loss,
        mining=args.mining,
        lr=args.lr,
        margin=args.margin,
        epochs=args.epochs,
        patience=args.patience,
        views=args.views,
        seed=args.seed,
        tap="fc" if args.train_last_layer else "",
    )
    ckpt = work / f"{args.dataset}-{args.loss}{'-fc' if args.train_last_layer else ''}.pt"
    t0 = time.perf_counter()
    run = train_embedding_head(train_dir, ckpt, opts, base)
    train_s = time.perf_counter() - t0
    after = evaluate_pairs(pairs, FacePipeline(str(ckpt)).features(face="central"))

    def op(rep, far):
        return next(o for o in rep.tar_at_far if o["target_far"] == far)["tar"]

    table = [
        (
            "10-fold accuracy",
            f"{100 * before.accuracy:.2f} ± {100 * before.accuracy_std:.2f}",
            f"{100 * after.accuracy:.2f} ± {100 * after.accuracy_std:.2f}",
        ),
        ("ROC AUC", f"{before.auc:.4f}", f"{after.auc:.4f}"),
        ("EER (%)", f"{100 * before.eer:.2f}", f"{100 * after.eer:.2f}"),
        ("TAR @ FAR 1e-2 (%)", f"{100 * op(before, 1e-2):.2f}", f"{100 * op(after, 1e-2):.2f}"),
        ("TAR @ FAR 1e-3 (%)", f"{100 * op(before, 1e-3):.2f}", f"{100 * op(after, 1e-3):.2f}"),
        (
            "pairs used / skipped",
            f"{before.n_pairs} / {len(before.skipped)}",
            f"{after.n_pairs} / {len(after.skipped)}",
        ),
    ]
    r = run.result
    print(
        f"dataset {args.dataset}" + (f" (1/{args.scale} resolution)" if args.dataset == "att-lowres" else "")
    )
    print(
        "head: "
        + ("the backbone's final fc, fine-tuned" if args.train_last_layer else "linear, identity start")
    )
    print(
        f"training: {run.n_train_images} images of {run.n_train_identities} people, early stopping on "
        f"{run.n_val_images} images of {run.n_val_identities} others; {args.loss}/{args.mining}, "
        f"lr {args.lr}, margin {args.margin}; best epoch {r.best_epoch} of {len(r.history) - 1}; "
        f"{train_s:.0f} s"
    )
    print(
        f"early-stopping set: accuracy {100 * r.before.val_accuracy:.2f} -> {100 * r.best.val_accuracy:.2f}, "
        f"triplet loss {r.before.val_loss:.4f} -> {r.best.val_loss:.4f}"
    )
    print(f"test: {before.n_pairs} pairs of unseen people")
    print(f"{'metric':<22} {'before':>16} {'after':>16}")
    for name, b, a in table:
        print(f"{name:<22} {b:>16} {a:>16}")
    if args.plot:
        from facestyle.eval.plots import plot_training

        plot_training([asdict(h) for h in r.history], args.plot, f"{args.dataset}: {args.loss}/{args.mining}")
    if args.roc:
        from facestyle.eval.metrics import roc_curve
        from facestyle.eval.plots import plot_roc

        curves = []
        for label, rep in (("base", before), ("fine-tuned", after)):
            roc = roc_curve(rep.scores, rep.labels)
            curves.append((f"{label} (AUC {rep.auc:.4f})", roc.fpr, roc.tpr))
        plot_roc(curves, args.roc, f"{args.dataset}: test people")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"before": before.to_dict(), "after": after.to_dict(), "training": run.to_dict()}, indent=1
            )
        )


if __name__ == "__main__":
    main()
