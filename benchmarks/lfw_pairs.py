"""LFW View 1 pairs: our pipeline (MTCNN + dlib ResNet in PyTorch) vs face_recognition, side by side.

Both pipelines see the same image files and the same pairs file; each is scored with the same
LFW-protocol code (10 folds, threshold tuned on the other nine), so the only difference is the pipeline:

- facestyle: MTCNN detection, 5-point similarity alignment to dlib's chip, dlib ResNet re-implemented
  in PyTorch, cosine similarity.
- face_recognition (dlib's own pipeline): ``face_locations`` (HOG detector, one upsampling) and
  ``face_encodings`` (5-point landmarks, dlib's chip extraction and ResNet), Euclidean distance
  (score = -distance).

Where several faces are found, both take the one nearest the image centre (the labelled person). A pair
is skipped when an image is missing or has no face for that pipeline; accuracies are also given on the
pairs both pipelines could use, so a detector that skips hard images does not look better for it.

Usage::

    python benchmarks/lfw_pairs.py [--data ../shared/data] [--pairs pairsDevTest.txt] [--json out.json]

face_recognition's ``face_recognition_models`` imports ``pkg_resources`` (gone from recent setuptools);
when it is missing this script installs a tiny stand-in that resolves the package's data files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facestyle.api import FacePipeline  # noqa: E402
from facestyle.detect.faces import central_face_index  # noqa: E402
from facestyle.eval import metrics  # noqa: E402
from facestyle.eval.pairs_eval import evaluate_pairs  # noqa: E402
from facestyle.eval.pairs_file import PairList, read_pairs  # noqa: E402


def import_face_recognition():
    """``import face_recognition``, shimming ``pkg_resources.resource_filename`` if setuptools lacks it."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from facestyle.models.weights import package_dir

        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, rel: str(package_dir(package) / rel)  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    import face_recognition

    return face_recognition


def face_recognition_embeddings(paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """128-d dlib descriptors via face_recognition (NaN rows and a status where no face was found)."""
    fr = import_face_recognition()
    out = np.full((len(paths), 128), np.nan)
    status = []
    for i, p in enumerate(paths):
        img = fr.load_image_file(str(p))
        locs = fr.face_locations(img, number_of_times_to_upsample=1, model="hog")
        if not locs:
            status.append("no_face")
            continue
        boxes = np.array([[left, top, right, bottom] for top, right, bottom, left in locs], dtype=np.float64)
        loc = locs[central_face_index(boxes, img.shape)]
        out[i] = fr.face_encodings(img, known_face_locations=[loc], num_jitters=1, model="small")[0]
        status.append("ok")
    return out, status


def kfold(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    res = metrics.kfold_accuracy(scores, labels, folds)
    return res.mean, res.std


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--pairs", default="pairsDevTest.txt")
    ap.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (1 is fastest on a busy machine).")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    lfw = args.data / "faces" / "lfw-view1"
    pairs: PairList = read_pairs(lfw / args.pairs, lfw / "images")
    images = pairs.image_paths()
    row = {p: i for i, p in enumerate(images)}
    a_idx = np.array([row[p.path1] for p in pairs.pairs])
    b_idx = np.array([row[p.path2] for p in pairs.pairs])
    labels = np.array([p.same for p in pairs.pairs])
    folds = metrics.default_folds(labels)

    t0 = time.perf_counter()
    ex = FacePipeline("dlib-resnet-v1").features(face="central", cache=False)  # timed cold, every run
    table = ex.embed(images)
    ours_s = time.perf_counter() - t0
    ours_emb, ours_ok = table.values, table.ok

    t0 = time.perf_counter()
    fr_emb, fr_status = face_recognition_embeddings(images)
    fr_s = time.perf_counter() - t0
    fr_ok = np.array([s == "ok" for s in fr_status])

    ours_scores = np.sum(ours_emb[a_idx] * ours_emb[b_idx], axis=1)
    fr_scores = -np.linalg.norm(fr_emb[a_idx] - fr_emb[b_idx], axis=1)
    use_ours = ours_ok[a_idx] & ours_ok[b_idx]
    use_fr = fr_ok[a_idx] & fr_ok[b_idx]
    both = use_ours & use_fr

    rows = []
    for name, scores, use, secs in (
        ("facestyle (MTCNN + dlib ResNet/PyTorch, cosine)", ours_scores, use_ours, ours_s),
        ("face_recognition (HOG + dlib, Euclidean)", fr_scores, use_fr, fr_s),
    ):
        acc, std = kfold(scores[use], labels[use], folds[use])
        acc_b, std_b = kfold(scores[both], labels[both], folds[both])
        auc = metrics.auc(metrics.roc_curve(scores[use], labels[use]))
        rows.append(
            {
                "pipeline": name,
                "pairs_used": int(use.sum()),
                "pairs_skipped": int(len(pairs.skipped) + (~use).sum()),
                "accuracy": acc,
                "std": std,
                "auc": auc,
                "accuracy_common_pairs": acc_b,
                "std_common_pairs": std_b,
                "common_pairs": int(both.sum()),
                "seconds": secs,
                "images": len(images),
            }
        )
    # The same numbers through the product's own `eval pairs` code path, as a consistency check.
    product = evaluate_pairs(pairs, ex)
    print(f"LFW View 1 {args.pairs}: {len(pairs.pairs) + len(pairs.skipped)} pairs, {len(images)} images")
    print(
        f"{'pipeline':<50} {'used':>5} {'skip':>5} {'10-fold acc':>15} {'AUC':>7} "
        f"{'acc (common)':>15} {'s':>6}"
    )
    for r in rows:
        print(
            f"{r['pipeline']:<50} {r['pairs_used']:>5} {r['pairs_skipped']:>5} "
            f"{100 * r['accuracy']:>8.2f} ± {100 * r['std']:.2f} {r['auc']:>7.4f} "
            f"{100 * r['accuracy_common_pairs']:>8.2f} ± {100 * r['std_common_pairs']:.2f} "
            f"{r['seconds']:>6.0f}"
        )
    print(
        f"`facestyle eval pairs` on the same file: {100 * product.accuracy:.2f}% "
        f"± {100 * product.accuracy_std:.2f}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"pairs": args.pairs, "rows": rows, "eval_pairs": product.to_dict()}, indent=1)
        )


if __name__ == "__main__":
    main()
