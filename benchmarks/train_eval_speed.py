"""Training throughput and the time of a full `eval pairs` on 1,000 LFW pairs.

Prints one table:

- feature extraction: images/s and chips/s of detect + align + frozen-backbone embedding of every
  augmented view (the one-off cost of a training run; cached afterwards);
- head training: images/s through the triplet head on cached features (each epoch's cost);
- `eval pairs` on LFW View 1 pairsDevTest (1,000 pairs): wall time from a cold detection cache, and
  images/s (each image is detected and embedded once however many pairs use it).

Everything runs in a temporary FACESTYLE_HOME so no earlier cache makes a number look better.

Usage::

    python benchmarks/train_eval_speed.py [--data ../shared/data] [--threads N] [--skip-eval]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--ids", type=int, default=40, help="AT&T identities used for the training figures")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--skip-eval", action="store_true", help="only the training figures")
    args = ap.parse_args()

    os.environ["FACESTYLE_HOME"] = tempfile.mkdtemp(prefix="facestyle-bench-")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from facestyle.api import FacePipeline
    from facestyle.eval.pairs_eval import evaluate_pairs
    from facestyle.eval.pairs_file import read_pairs
    from facestyle.io.folders import scan_labelled_folder
    from facestyle.train.embedding_head import prepare_features
    from facestyle.train.trainer import EmbeddingHeadOptions, fit_embedding_head

    rows: list[tuple[str, str]] = []
    ex = FacePipeline("dlib-resnet-v1").features(face="central")

    att = args.data / "faces" / "att"
    data = scan_labelled_folder(att)
    keep = data.labels < args.ids
    data = data.subset(keep)
    opts = EmbeddingHeadOptions(views=args.views, epochs=args.epochs, patience=args.epochs, val_fraction=0.25)
    t0 = time.perf_counter()
    x_tr, y_tr, x_va, y_va, info = prepare_features(data, ex, opts)
    feat_s = time.perf_counter() - t0
    rows.append(("images for training (AT&T)", f"{len(data)} ({args.ids} people, {args.views} views each)"))
    rows.append(
        (
            "feature extraction",
            f"{feat_s:.1f} s: {len(data) / feat_s:.1f} images/s, "
            f"{info['chips_embedded'] / feat_s:.1f} chips/s",
        )
    )
    t0 = time.perf_counter()
    result = fit_embedding_head(x_tr, y_tr, x_va, y_va, opts)
    train_s = time.perf_counter() - t0
    rows.append(
        (
            "head training (cached features)",
            f"{result.samples_per_second:,.0f} images/s "
            f"({len(result.history) - 1} epochs in {train_s:.1f} s incl. held-out evaluation)",
        )
    )
    first_epoch = feat_s + train_s / max(len(result.history) - 1, 1)
    rows.append(("first epoch end to end", f"{first_epoch:.1f} s: {len(data) / first_epoch:.1f} images/s"))

    if not args.skip_eval:
        lfw = args.data / "faces" / "lfw-view1"
        pairs = read_pairs(lfw / "pairsDevTest.txt", lfw / "images")
        t0 = time.perf_counter()
        report = evaluate_pairs(pairs, ex)
        eval_s = time.perf_counter() - t0
        n_pairs = len(pairs.pairs) + len(pairs.skipped)
        rows.append(
            (
                f"eval pairs, {n_pairs} LFW pairs (cold)",
                f"{eval_s:.1f} s for {report.n_images} images: "
                f"{report.n_images / eval_s:.2f} images/s, accuracy {100 * report.accuracy:.2f}%",
            )
        )

    print(f"torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}")
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
