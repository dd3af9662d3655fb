"""Train the YOLO-style grid face head on MTCNN boxes over LFW View 1 and score it against MTCNN.

    python benchmarks/grid_head_lfw.py [--train 1000] [--test 250] [--epochs 10] [--work out/grid-head]

People are split, not images: every fifth name (sorted) is held out, so no test face was seen in
training. MTCNN (our detector, default settings) labels both sets; its boxes are the ground truth.
Printed: mAP@0.5 of the head on the training and held-out images, the Haar cascade's mAP@0.5 on the
same held-out images for context, and the times (annotation, backbone features, head training).
Annotations are cached as CSV in ``--work``; delete them to re-label.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facestyle.detect.grid import INPUT_SIZE, TAP_BLOCK  # noqa: E402
from facestyle.heads import grid_detect as gd  # noqa: E402
from facestyle.heads.map import ImageBoxes, mean_average_precision  # noqa: E402
from facestyle.io.images import load_image  # noqa: E402
from facestyle.models.registry import detector  # noqa: E402


def pick_images(lfw: Path, n_train: int, n_test: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    people = sorted(p for p in (lfw / "images").iterdir() if p.is_dir())
    train_pool = [f for k, p in enumerate(people) if k % 5 for f in sorted(p.glob("*.jpg"))]
    test_pool = [f for k, p in enumerate(people) if not k % 5 for f in sorted(p.glob("*.jpg"))]
    rng = random.Random(seed)
    return sorted(rng.sample(train_pool, n_train)), sorted(rng.sample(test_pool, n_test))


def annotate(paths: list[Path], csv_path: Path, mtcnn) -> float:
    """MTCNN's boxes as the ground truth CSV (kept: delete it to re-label); returns the seconds spent."""
    if csv_path.is_file():
        return 0.0
    t0 = time.perf_counter()
    rows = gd.annotate(paths, mtcnn)
    for row in rows:
        if row.error:
            print(f"skipped {row.error}", file=sys.stderr)
    gd.write_csv(csv_path, rows)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--test", type=int, default=250)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--anchors", type=str, default="", help="e.g. '2.5,3:1.5,2' (cell units); default none")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "grid-head")
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    lfw = args.data / "faces" / "lfw-view1"
    train_paths, test_paths = pick_images(lfw, args.train, args.test)
    tag = f"{args.train}-{args.test}"
    train_csv, test_csv = args.work / f"train-{tag}.csv", args.work / f"test-{tag}.csv"
    mtcnn = detector("mtcnn", args.device)
    t_ann = annotate(train_paths, train_csv, mtcnn) + annotate(test_paths, test_csv, mtcnn)
    options = gd.GridHeadOptions(epochs=args.epochs, anchors=gd.parse_anchors(args.anchors))
    run = gd.train_grid_detector(train_csv, eval_annotations=test_csv, options=options, device=args.device)
    run.save(args.work / f"grid-head-{tag}.pt")
    report = run.report
    held = gd.evaluate_grid_detector(args.work / f"grid-head-{tag}.pt", test_csv, device=args.device)
    test_items = gd.read_annotations(test_csv).items
    n_faces_train = sum(len(i.boxes) for i in gd.read_annotations(train_csv).items)
    n_faces_test = sum(len(i.boxes) for i in test_items)

    haar = detector("haar")
    t0 = time.perf_counter()
    preds = []
    for item in test_items:
        faces = haar.detect(load_image(item.image))
        boxes = np.stack([f.box for f in faces]) if faces else np.zeros((0, 4))
        preds.append(ImageBoxes(boxes, np.zeros(len(faces), int), np.array([f.score for f in faces])))
    t_haar = time.perf_counter() - t0
    m_haar = mean_average_precision(preds, [ImageBoxes(i.boxes, i.labels) for i in test_items])

    grid = gd.dlib_feature_maps(args.device)(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.uint8)).shape[-1]
    print(
        f"images: train {report['train_images']} ({n_faces_train} MTCNN faces), "
        f"held-out {report['eval_images']} ({n_faces_test} faces), people disjoint"
    )
    print(
        f"grid {grid}x{grid}, anchors {run.head.anchors.tolist()}, "
        f"epochs {args.epochs}, torch threads {args.threads}"
    )
    print()
    print("| detector vs MTCNN boxes | mAP@0.5 held-out | max recall | mAP@0.5 train |")
    print("|---|---|---|---|")
    print(
        f"| grid head (dlib ResNet block-{TAP_BLOCK} features) | {report['map50_eval']:.3f} | "
        f"{held.recall.get('face', 0):.3f} | {report['map50_train']:.3f} |"
    )
    print(f"| Haar cascade (ours) | {m_haar['map']:.3f} | {m_haar['recall'].get(0, 0):.3f} | - |")
    print()
    n_images = report["train_images"] + report["eval_images"]
    print(
        f"time: MTCNN labelling {t_ann:.1f} s (0 = cached CSV), backbone features "
        f"{report['feature_seconds']:.1f} s ({1000 * report['feature_seconds'] / n_images:.0f} ms/image), "
        f"head training {report['train_seconds']:.1f} s, Haar on held-out {t_haar:.1f} s"
    )
    print(f"loss first/last epoch: {run.losses[0]:.3f} / {run.losses[-1]:.3f}")


if __name__ == "__main__":
    main()
