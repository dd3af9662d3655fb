"""Faces that fill the frame (issue 20): the face-finding modes ``detect``, ``auto`` and ``whole`` on
tight crops of real photos, side by side in one run.

The tight-crop set is built from the shared data as the issue says:

- the LFW View 1 DevTest photos (150x150 originals; the face nearest the centre, as ``eval pairs``)
  and AT&T (92x112 grey; the largest face);
- on each uncropped photo MTCNN finds five landmarks (``crop="detect"``: today's pipeline);
- each photo is cropped to the box spanned by those five landmarks (eye centres, nose tip, mouth
  corners), widened on its centre by k in {1.2, 1.4, 1.6}: forehead, chin and ears are cut;
- a hard side-light variant: the k = 1.4 crop with one half of the face darkened by a gradient to near
  black (gain 1 at the midline between the eyes, falling linearly to 0.04 over 15% of the crop's width,
  then 0.04 to the edge; the left half for even-numbered photos, the right for odd).

For each set and mode it reports: the face-found rate (and how the faces were found: d = detector,
p = padded re-detection, w = whole image), the mean and 95th percentile landmark error against the
uncropped photo's landmarks as a fraction of the inter-ocular distance (over the crops where a face was
found), the 10-fold pairs accuracy on the cropped DevTest pairs (``facestyle eval pairs``'s folds and
metrics; over the pairs whose two crops gave a face, and that count), and AT&T one-shot identify rank-1
(photo 1 of each person enrolled from its crop, the other nine identified from theirs; a probe without a
face counts as a miss). The first rows are the uncropped photos under ``detect`` and ``auto`` (no
loss allowed), the last the faceless images in the shared style data under ``auto``, with the margin of
``auto``'s gate: each faceless image's face score, and how many of 672 face-shaped tiles cut from them
pass the gate. Two kinds of reference rows use the uncropped photo's own landmarks instead of finding
them: "(reference landmarks)" is what the crop itself costs; "(... grey chip fill)" is the same with
the chip filled mid-grey where it reaches past the crop (as the embedder cuts it today, the crop's edge
is repeated there), for whoever owns alignment; on the uncropped photos it is the no-loss check of that
fill. ``--fit-box`` fits the detector box around five landmarks that ``auto`` and ``whole`` refine
landmarks on (facestyle/detect/finding.py's ``BOX_FROM_MARKS``, ``BOX_ABOVE_MARKS``) and stops.

Usage::

    python benchmarks/tight_crops.py [--data ../shared/data] [--pairs N] [--att-subjects N] [--json out.json]
    python benchmarks/tight_crops.py --fit-box

``--pairs 200 --att-subjects 10 --padding-photos 50`` is a quick look; the full run (1000 pairs, 40
people, 300 photos per set for the borders table) takes about 15 minutes on 2 lightly loaded CPU cores
and 35 on very busy ones. docs/face-finding.md has its table and what it means.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facestyle.align.landmarks import landmarks_of  # noqa: E402
from facestyle.api import FacePipeline  # noqa: E402
from facestyle.detect.faces import Face, choose_face  # noqa: E402
from facestyle.detect.finding import (  # noqa: E402
    CROP_MODES,
    PAD_FRACTION,
    PADDED_MIN_FILL,
    WHOLE_MIN_SCORE,
    FaceFinder,
    plausible_crop,
    whole_face,
)
from facestyle.detect.mtcnn_stages import onet_refine  # noqa: E402
from facestyle.embed.features import face_finder  # noqa: E402
from facestyle.eval import metrics  # noqa: E402
from facestyle.eval.identify_eval import identity_scores  # noqa: E402
from facestyle.eval.pairs_eval import summarise  # noqa: E402
from facestyle.eval.pairs_file import PairList, read_pairs  # noqa: E402
from facestyle.io.images import load_image  # noqa: E402

KS = (1.2, 1.4, 1.6)
#: Style images that are portraits (the detector finds the face): left out of the faceless tiles.
PORTRAITS = ("woman-with-hat-matisse.jpg",)
SIDE_K = 1.4
PAD_BORDERS = (0, 128, "edge", "reflect")  # black, grey, repeated edge, mirrored
UNCROPPED_PAIRS = 0.9870  # `facestyle eval pairs` on pairsDevTest.txt, MTCNN + dlib-resnet-v1


def tight_crop(image: np.ndarray, marks: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """The box spanned by the five landmarks, widened by ``k`` on its centre (clipped to the photo),
    and the crop's top-left corner in the photo."""
    lo, hi = marks.min(axis=0), marks.max(axis=0)
    centre, size = (lo + hi) / 2, (hi - lo) * k
    x1, y1 = np.maximum(np.round(centre - size / 2).astype(int), 0)
    x2, y2 = np.round(centre + size / 2).astype(int)
    x2, y2 = min(x2, image.shape[1]), min(y2, image.shape[0])
    return np.ascontiguousarray(image[y1:y2, x1:x2]), np.array([x1, y1], np.float64)


def side_light(image: np.ndarray, marks: np.ndarray, left: bool) -> np.ndarray:
    """One half of the face darkened by a gradient to near black (see the module docstring)."""
    w = image.shape[1]
    mid = float(marks[:2, 0].mean())
    x = np.arange(w, dtype=np.float64)
    beyond = (mid - x) if left else (x - mid)
    gain = np.clip(1.0 - beyond / (0.15 * w), 0.04, 1.0)
    return (image.astype(np.float64) * gain[None, :, None]).round().clip(0, 255).astype(np.uint8)


def landmark_error(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance of the five landmarks, as a fraction of the true inter-ocular distance."""
    iod = float(np.linalg.norm(truth[0] - truth[1]))
    return float(np.linalg.norm(found - truth, axis=1).mean() / iod)


def plausible_crop_geometry(face, shape) -> bool:
    """:func:`plausible_crop` without the score: do the landmarks look like a face filling the frame?"""
    return plausible_crop(Face(face.box, 1.0, face.landmarks), shape)


def tiles(image: np.ndarray) -> list[np.ndarray]:
    """48 face-crop-shaped tiles (width 0.9 x height) of an image: a 4 x 4 grid at each of three sizes
    (1/2, 1/3 and 1/4 of the short side). Faceless tiles are a harder test of the ``auto`` gate than
    the whole image: many look like nothing O-Net has seen."""
    h, w = image.shape[:2]
    out = []
    for frac in (0.5, 0.33, 0.25):
        side = int(min(h, w) * frac)
        width = int(side * 0.9)
        for y in np.linspace(0, h - side, 4).astype(int):
            for x in np.linspace(0, w - width, 4).astype(int):
                out.append(np.ascontiguousarray(image[y : y + side, x : x + width]))
    return out


def grey_filled(image: np.ndarray, marks: np.ndarray, fill: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """The image inside a mid-grey border as wide as its longer side, and the landmarks moved with it:
    a chip cut from it is grey, not the image's edge repeated, where it reaches past the image."""
    m = max(image.shape[:2])
    out = np.pad(image, ((m, m), (m, m), (0, 0)), mode="constant", constant_values=fill)
    return out, marks + m


def fit_detector_box(paths: list[Path], detector) -> None:
    """Print the box MTCNN draws around a face as a function of its five landmarks (the constants
    ``BOX_FROM_MARKS`` and ``BOX_ABOVE_MARKS`` of facestyle/detect/finding.py): side = a * eye distance
    + b * eyes-to-mouth distance (least squares), and the box centre's height above the landmarks'
    mean as a fraction of the side (median)."""
    from facestyle.detect.mtcnn_stages import squared

    rows, sides, above = [], [], []
    for p in paths:
        img = load_image(p)
        face = choose_face(detector.detect(img), img.shape, "central")
        if face is None:
            continue
        marks = landmarks_of(face)
        box = squared(np.r_[np.asarray(face.box, np.float64), 0.0][None])[0, :4]
        iod = np.linalg.norm(marks[1] - marks[0])
        eye_mouth = np.linalg.norm((marks[3] + marks[4]) / 2 - (marks[0] + marks[1]) / 2)
        side = box[2] - box[0]
        rows.append([iod, eye_mouth])
        sides.append(side)
        above.append((marks[:, 1].mean() - (box[1] + box[3]) / 2) / side)
    x, y = np.array(rows), np.array(sides)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    err = np.median(np.abs(x @ coef / y - 1))
    print(
        f"{len(y)} photos: side = {coef[0]:.2f} * iod + {coef[1]:.2f} * eye_mouth (median error "
        f"{100 * err:.1f}%); centre above the landmarks' mean by {np.median(above):.3f} of the side"
    )


def subset_pairs(pairs: PairList, n: int) -> PairList:
    """The first n/2 same and n/2 different pairs (all with n >= the file's count)."""
    if n >= len(pairs.pairs):
        return pairs
    same = [p for p in pairs.pairs if p.same][: n // 2]
    diff = [p for p in pairs.pairs if not p.same][: n - n // 2]
    return PairList(same + diff, pairs.skipped, pairs.n_folds, pairs.warnings)


class Runner:
    """Finds faces under each mode and embeds the chosen face, sharing work between modes: an image
    whose chosen face has the same landmarks under two modes is embedded once."""

    def __init__(self, pipe: FacePipeline) -> None:
        self.pipe = pipe
        self.finders = {mode: face_finder(pipe.detector, mode) for mode in CROP_MODES}
        self._emb: dict[bytes, np.ndarray] = {}

    def find(self, image: np.ndarray, mode: str, choice: str):
        return choose_face(self.finders[mode].detect(image), image.shape, choice)

    def embed(self, items: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Embeddings of (image, landmarks) items, batched, cached by image and landmarks."""
        keys = [
            hashlib.sha1(
                img.tobytes() + repr(img.shape).encode() + marks.astype(np.float32).tobytes()
            ).digest()
            for img, marks in items
        ]
        todo = [i for i, k in enumerate(keys) if k not in self._emb]
        for start in range(0, len(todo), 64):
            chunk = todo[start : start + 64]
            chips = np.stack([self.pipe.embedder.align(items[i][0], items[i][1]) for i in chunk])
            for i, v in zip(chunk, self.pipe.embedder.embed_chips(chips), strict=True):
                self._emb[keys[i]] = v
        dim = self.pipe.embedder.embedding_size
        return np.stack([self._emb[k] for k in keys]) if keys else np.zeros((0, dim), np.float32)


def run_set(runner: Runner, images: list, truths: list[np.ndarray | None], choice: str, mode: str):
    """(found_by per image or None, landmark errors, embeddings with NaN rows, the face or None) of one
    set under one mode. An image that is None (no crop could be made) has no face."""
    found_by, errors, items, rows, found_faces = [], [], [], [], []
    for img, truth in zip(images, truths, strict=True):
        face = None if img is None else runner.find(img, mode, choice)
        found_faces.append(face)
        if face is None:
            found_by.append(None)
            continue
        marks = landmarks_of(face)
        found_by.append(face.found_by)
        if truth is not None:
            errors.append(landmark_error(marks, truth))
        items.append((img, marks))
        rows.append(len(found_by) - 1)
    emb = np.full((len(images), runner.pipe.embedder.embedding_size), np.nan, np.float32)
    if items:
        emb[rows] = runner.embed(items)
    return found_by, np.array(errors), emb, found_faces


def pairs_accuracy(pairs: PairList, row: dict[Path, int], emb: np.ndarray, score_pairs) -> tuple[float, int]:
    """10-fold accuracy over the pairs whose two images have a face (eval pairs' folds), and their count."""
    keep = [
        i
        for i, p in enumerate(pairs.pairs)
        if not np.isnan(emb[row[p.path1], 0]) and not np.isnan(emb[row[p.path2], 0])
    ]
    used = [pairs.pairs[i] for i in keep]
    labels = np.array([p.same for p in used], dtype=bool)
    if len(used) < 20 or labels.all() or (~labels).all():
        return float("nan"), len(used)
    a = emb[[row[p.path1] for p in used]]
    b = emb[[row[p.path2] for p in used]]
    folds = metrics.default_folds([p.same for p in pairs.pairs])[keep]
    report = summarise(score_pairs(a, b), labels, folds, model="")
    return report.accuracy, len(used)


def att_rank1(emb: np.ndarray, subjects: int) -> float:
    """One-shot: photo 1 of each person is the template (a miss for all nine probes if it has no face);
    the other nine are probes, a probe without a face is a miss."""
    emb = emb.reshape(subjects, 10, -1)
    gallery = emb[:, 0].astype(np.float64)
    has_template = ~np.isnan(gallery[:, 0])
    correct = 0
    for s in range(subjects):
        probes = emb[s, 1:].astype(np.float64)
        ok = ~np.isnan(probes[:, 0])
        if not ok.any() or not has_template[s]:
            continue
        scores = identity_scores(probes[ok], gallery[has_template], np.flatnonzero(has_template), subjects)
        correct += int((scores.argmax(axis=1) == s).sum())
    return correct / (subjects * 9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--pairs", type=int, default=1000, help="DevTest pairs used (half same, half not)")
    parser.add_argument("--att-subjects", type=int, default=40)
    parser.add_argument(
        "--padding-photos",
        type=int,
        default=300,
        help="photos per crop set for the table of padded re-detection borders (0: no such table)",
    )
    parser.add_argument(
        "--fit-box",
        action="store_true",
        help="only fit the detector box around five landmarks on 350 DevTrain photos (finding.py's "
        "BOX_FROM_MARKS, BOX_ABOVE_MARKS) and print it",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("FACESTYLE_HOME", "/tmp/facestyle-tight-crops")  # no cache is written anyway
    t0 = time.perf_counter()
    lfw = args.data / "faces" / "lfw-view1"
    if args.fit_box:
        train = read_pairs(lfw / "pairsDevTrain.txt", lfw / "images").image_paths()[::6][:350]
        fit_detector_box(train, FacePipeline(crop="detect").detector)
        return
    pairs = subset_pairs(read_pairs(lfw / "pairsDevTest.txt", lfw / "images"), args.pairs)
    lfw_paths = pairs.image_paths()
    row = {p: i for i, p in enumerate(lfw_paths)}
    att_paths = [
        args.data / "faces" / "att" / f"s{s}" / f"{i}.pgm"
        for s in range(1, args.att_subjects + 1)
        for i in range(1, 11)
    ]
    style_paths = sorted((args.data / "style").rglob("*.jpg"))
    pipe = FacePipeline(crop="detect")
    runner = Runner(pipe)
    score_pairs = pipe.embedder.score_pairs
    lfw_images = [load_image(p) for p in lfw_paths]
    att_images = [load_image(p) for p in att_paths]
    n_lfw = len(lfw_images)

    table: list[dict] = []

    def record(name: str, mode: str, found_by, errors, emb, n_images: int) -> dict:
        found = [f for f in found_by if f is not None]
        lfw_emb, att_emb = emb[:n_lfw], emb[n_lfw:]
        acc, used = pairs_accuracy(pairs, row, lfw_emb, score_pairs)
        entry = {
            "set": name,
            "mode": mode,
            "n": n_images,
            "found": len(found) / n_images,
            "by": {k: found.count(k) for k in ("detector", "padded", "whole")},
            "landmark_error_mean": float(errors.mean()) if len(errors) else float("nan"),
            "landmark_error_p95": float(np.percentile(errors, 95)) if len(errors) else float("nan"),
            "pairs_accuracy": acc,
            "pairs_used": used,
            "pairs_total": len(pairs.pairs),
            "att_rank1": att_rank1(att_emb, args.att_subjects),
        }
        table.append(entry)
        print(f"  {name} {mode}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return entry

    # Uncropped photos: the reference landmarks (detect) and the no-loss check (auto).
    images = lfw_images + att_images
    choices = ["central"] * n_lfw + ["largest"] * len(att_images)
    fb, errs, emb, ref_faces = run_set_grouped(runner, images, [None] * len(images), choices, "detect")
    truths = [None if f is None else landmarks_of(f) for f in ref_faces]
    record("uncropped", "detect", fb, errs, emb, len(images))
    # How far MTCNN's own landmarks move when O-Net sees a slightly different box (its final, regressed
    # one instead of the one it placed them from): the noise floor of the reference landmarks.
    onet = runner.finders["auto"].onet
    floor = [
        landmark_error(onet_refine(img, f.box[None], onet)[1][0], landmarks_of(f))
        for img, f in zip(images, ref_faces, strict=True)
        if f is not None
    ]
    fb, errs, emb, _ = run_set_grouped(runner, images, truths, choices, "auto")
    record("uncropped", "auto", fb, errs, emb, len(images))
    ok = [i for i, t in enumerate(truths) if t is not None]
    emb = np.full((len(images), pipe.embedder.embedding_size), np.nan, np.float32)
    emb[ok] = runner.embed([grey_filled(images[i], truths[i]) for i in ok])
    fb = ["reference" if t is not None else None for t in truths]
    record("uncropped", "(detect, grey chip fill)", fb, np.zeros(0), emb, len(images))

    # The tight crops (made only where the uncropped photo has landmarks; the others count as not found).
    crop_sets = []
    for name, k, dark in [(f"k={k}", k, False) for k in KS] + [(f"k={SIDE_K} side light", SIDE_K, True)]:
        crops, local = [], []
        for i, (img, truth) in enumerate(zip(images, truths, strict=True)):
            if truth is None:  # no landmarks on the uncropped photo: no crop (and no face in any mode)
                crops.append(None)
                local.append(None)
                continue
            crop, corner = tight_crop(img, truth, k)
            marks = truth - corner
            crops.append(side_light(crop, marks, i % 2 == 0) if dark else crop)
            local.append(marks)
        crop_sets.append((name, crops, local))
        n_crops = sum(c is not None for c in crops)
        for mode in CROP_MODES:
            fb, errs, emb, _ = run_set_grouped(runner, crops, local, choices, mode)
            record(name, mode, fb, errs, emb, n_crops)
        # What the crop itself costs: the uncropped photo's own landmarks, moved onto the crop.
        ok = [i for i, c in enumerate(crops) if c is not None]
        emb = np.full((len(crops), pipe.embedder.embedding_size), np.nan, np.float32)
        emb[ok] = runner.embed([(crops[i], local[i]) for i in ok])
        fb = ["reference" if c is not None else None for c in crops]
        record(name, "(reference landmarks)", fb, np.zeros(0), emb, n_crops)
        # The same with the chip filled grey beyond the crop instead of the crop's edge repeated.
        emb = np.full((len(crops), pipe.embedder.embedding_size), np.nan, np.float32)
        emb[ok] = runner.embed([grey_filled(crops[i], local[i]) for i in ok])
        record(name, "(reference landmarks, grey chip fill)", fb, np.zeros(0), emb, n_crops)

    # The padded re-detection alone, with each border, on evenly spaced photos of each crop set.
    padding = []
    if args.padding_photos:
        for name, crops, local in crop_sets:
            picked = [(c, t) for c, t in zip(crops, local, strict=True) if c is not None][
                :: max(1, len(crops) // args.padding_photos)
            ]
            for fill in PAD_BORDERS:
                finder = FaceFinder(pipe.detector, crop="auto", pad_fill=fill)
                errs, found = [], 0
                for c, t in picked:
                    faces = finder.padded(c)
                    if faces:
                        found += 1
                        errs.append(landmark_error(landmarks_of(faces[0]), t))
                padding.append(
                    {
                        "set": name,
                        "border": str(fill),
                        "n": len(picked),
                        "found": found / len(picked),
                        "landmark_error_mean": float(np.mean(errs)) if errs else float("nan"),
                        "landmark_error_p95": float(np.percentile(errs, 95)) if errs else float("nan"),
                    }
                )
        print(f"  padding borders: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    style = {}
    for mode in CROP_MODES:
        style[mode] = sum(runner.find(load_image(p), mode, "largest") is None for p in style_paths)
    # The auto gate's margin: the whole-image face score of each faceless image, and how many tiles cut
    # from them pass the gate (the portrait, whose face the detector finds, is left out of the tiles).
    onet = runner.finders["auto"].onet
    style_scores, tile_pass, n_tiles = {}, 0, 0
    for p in style_paths:
        img = load_image(p)
        face = whole_face(img, onet)
        style_scores[p.name] = face.score if plausible_crop_geometry(face, img.shape) else 0.0
        if p.name in PORTRAITS:
            continue
        for tile in tiles(img):
            n_tiles += 1
            tile_pass += plausible_crop(whole_face(tile, onet), tile.shape)
    seconds = time.perf_counter() - t0

    print(
        f"\nTight crops of LFW View 1 DevTest ({n_lfw} photos, {len(pairs.pairs)} pairs) and AT&T "
        f"({len(att_images)} photos), MTCNN + dlib-resnet-v1, {seconds / 60:.1f} min\n"
    )
    head = (
        "| set | mode | found | by d/p/w | landmark err mean | p95 | pairs acc (pairs used) | AT&T rank-1 |"
    )
    print(head)
    print("|" + "---|" * 8)
    for e in table:
        by = "/".join(str(e["by"][k]) for k in ("detector", "padded", "whole"))
        acc = "n/a" if np.isnan(e["pairs_accuracy"]) else f"{100 * e['pairs_accuracy']:.2f}%"
        err = "n/a" if np.isnan(e["landmark_error_mean"]) else f"{100 * e['landmark_error_mean']:.1f}%"
        p95 = "n/a" if np.isnan(e["landmark_error_p95"]) else f"{100 * e['landmark_error_p95']:.1f}%"
        print(
            f"| {e['set']} | {e['mode']} | {100 * e['found']:.1f}% | {by} | {err} | {p95} | "
            f"{acc} ({e['pairs_used']}/{e['pairs_total']}) | {100 * e['att_rank1']:.2f}% |"
        )
    print(
        f"\nFaceless style images giving no face: detect {style['detect']}/{len(style_paths)}, "
        f"auto {style['auto']}/{len(style_paths)}, whole {style['whole']}/{len(style_paths)}"
    )
    top = sorted(style_scores.items(), key=lambda kv: -kv[1])[:3]
    print(
        f"auto's gate on faceless images: face score >= {WHOLE_MIN_SCORE} needed; highest "
        + ", ".join(f"{name} {score:.2f}" for name, score in top)
        + f" (0 where the landmarks are not a face's); tiles passing: {tile_pass}/{n_tiles}"
    )
    print(f"Uncropped pairs accuracy for reference: {100 * UNCROPPED_PAIRS:.2f}% (1000 DevTest pairs)")
    print(
        "Noise of the reference landmarks (O-Net again on the uncropped photo, on the detector's final "
        f"box): mean {100 * np.mean(floor):.1f}%, p95 {100 * np.percentile(floor, 95):.1f}% of the "
        "inter-ocular distance"
    )
    if padding:
        print(
            f"\nPadded re-detection alone ({PAD_FRACTION:.0%} border; "
            f"faces must fill {PADDED_MIN_FILL:.0%} of the width):\n"
        )
        print("| set | border | photos | found | landmark err mean | p95 |")
        print("|" + "---|" * 6)
        for e in padding:
            border = {"0": "black", "128": "grey"}.get(e["border"], e["border"])
            err = "n/a" if np.isnan(e["landmark_error_mean"]) else f"{100 * e['landmark_error_mean']:.1f}%"
            p95 = "n/a" if np.isnan(e["landmark_error_p95"]) else f"{100 * e['landmark_error_p95']:.1f}%"
            print(f"| {e['set']} | {border} | {e['n']} | {100 * e['found']:.1f}% | {err} | {p95} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": table,
                    "padding": padding,
                    "reference_noise": floor,
                    "style_no_face": style,
                    "style_face_scores": style_scores,
                    "tiles_passing": [tile_pass, n_tiles],
                    "n_style": len(style_paths),
                    "seconds": seconds,
                },
                indent=2,
            )
        )


def run_set_grouped(runner: Runner, images, truths, choices, mode):
    """:func:`run_set` over images whose face choice differs (LFW: central; AT&T: largest)."""
    found_by, errors, emb, marks = [], [], [], []
    for choice in dict.fromkeys(choices):  # contiguous groups, so the order is kept
        idx = [i for i, c in enumerate(choices) if c == choice]
        fb, errs, e, m = run_set(runner, [images[i] for i in idx], [truths[i] for i in idx], choice, mode)
        found_by += fb
        errors.append(errs)
        emb.append(e)
        marks += m
    return found_by, np.concatenate(errors), np.concatenate(emb), marks


if __name__ == "__main__":
    main()
