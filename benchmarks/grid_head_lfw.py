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

from facestyle.detect import get_detector  # noqa: E402
from facestyle.heads import grid_detect as gd  # noqa: E402
from facestyle.heads.map import ImageBoxes, mean_average_precision  # noqa: E402
from facestyle.io.images import load_image  # noqa: E402


def pick_images(lfw: Path, n_train: int, n_test: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    people = sorted(p for p in (lfw / "images").iterdir() if p.is_dir())
    train_pool = [f for k, p in enumerate(people) if k % 5 for f in sorted(p.glob("*.jpg"))]
    test_pool = [f for k, p in enumerate(people) if not k % 5 for f in sorted(p.glob("*.jpg"))]
    rng = random.Random(seed)
    return sorted(rng.sample(train_pool, n_train)), sorted(rng.sample(test_pool, n_test))


def annotate(paths: list[Path], csv_path: Path, detector) -> float:
    if csv_path.is_file():
        return 0.0
    t0 = time.perf_counter()
    rows = [(str(p), detector.detect(load_image(p))) for p in paths]
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
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 avoids oversubscription)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    lfw = args.data / "faces" / "lfw-view1"
    train_paths, test_paths = pick_images(lfw, args.train, args.test)
    tag = f"{args.train}-{args.test}"
    mtcnn = get_detector("mtcnn")
    t_ann = annotate(train_paths, args.work / f"train-{tag}.csv", mtcnn)
    t_ann += annotate(test_paths, args.work / f"test-{tag}.csv", mtcnn)
    train_ann = gd.read_annotations(args.work / f"train-{tag}.csv")
    test_ann = gd.read_annotations(args.work / f"test-{tag}.csv")
    anchors = [[float(v) for v in a.split(",")] for a in args.anchors.split(":")] if args.anchors else None
    cfg = gd.GridTrainConfig(epochs=args.epochs, anchors=anchors)
    backbone = gd.DlibFeatureMap()
    anchor_t = gd.GridHead(anchors=anchors).anchors
    t0 = time.perf_counter()
    train_set = gd.load_and_encode(train_ann, backbone, anchor_t)
    test_set = gd.load_and_encode(test_ann, backbone, anchor_t)
    t_feat = time.perf_counter() - t0
    head, log = gd.train_grid_head(train_set, len(train_ann.classes), cfg)
    m_train = gd.evaluate(head, train_set)
    m_test = gd.evaluate(head, test_set)
    gd.save_grid_head(
        head, train_ann.classes, args.work / f"grid-head-{tag}.pt", {"map50_test": m_test["map"]}
    )

    haar = get_detector("haar")
    t0 = time.perf_counter()
    preds = []
    for item in test_set.items:
        faces = haar.detect(load_image(item.image))
        boxes = np.stack([f.box for f in faces]) if faces else np.zeros((0, 4))
        preds.append(ImageBoxes(boxes, np.zeros(len(faces), int), np.array([f.score for f in faces])))
    t_haar = time.perf_counter() - t0
    m_haar = mean_average_precision(preds, [ImageBoxes(i.boxes, i.labels) for i in test_set.items])

    n_faces_train = int(sum(len(i.boxes) for i in train_set.items))
    n_faces_test = int(sum(len(i.boxes) for i in test_set.items))
    print(
        f"images: train {len(train_set.items)} ({n_faces_train} MTCNN faces), "
        f"held-out {len(test_set.items)} ({n_faces_test} faces), people disjoint"
    )
    print(
        f"grid {train_set.feats.shape[-1]}x{train_set.feats.shape[-1]}, anchors {head.anchors.tolist()}, "
        f"epochs {args.epochs}, torch threads {args.threads}"
    )
    print()
    print("| detector vs MTCNN boxes | mAP@0.5 held-out | max recall | mAP@0.5 train |")
    print("|---|---|---|---|")
    print(
        f"| grid head (dlib ResNet block-{gd.TAP_BLOCK} features) | {m_test['map']:.3f} | "
        f"{m_test['recall'].get(0, 0):.3f} | {m_train['map']:.3f} |"
    )
    print(f"| Haar cascade (ours) | {m_haar['map']:.3f} | {m_haar['recall'].get(0, 0):.3f} | - |")
    print()
    print(
        f"time: MTCNN labelling {t_ann:.1f} s (0 = cached CSV), backbone features {t_feat:.1f} s "
        f"({1000 * t_feat / (len(train_set.items) + len(test_set.items)):.0f} ms/image), "
        f"head training {log['train_seconds']:.1f} s, Haar on held-out {t_haar:.1f} s"
    )
    print(f"loss first/last epoch: {log['loss'][0]:.3f} / {log['loss'][-1]:.3f}")


if __name__ == "__main__":
    main()
