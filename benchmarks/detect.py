"""Face detectors side by side on LFW View 1: detection rate and milliseconds per image.

    python benchmarks/detect.py [--n 200] [--n-large 40] [--threads 1]

Detectors: ours (``mtcnn``, ``haar``: the package's interface and NMS) next to the reference
implementations they are built from, facenet-pytorch's own ``MTCNN`` class and OpenCV's
``detectMultiScale`` with its own grouping (minNeighbors=3). Same images, same thread count.

LFW View 1 images here are 150 x 150 (downscaled from LFW's 250 x 250), each centred on one person.
They are resized to 250 px (LFW's native size) and to 1024 px (a face of ~380 px: a phone photo of one
person) with bicubic interpolation. "Detection rate" counts an image as detected when some box
contains the image centre (the labelled person); "any" when at least one box was returned.
Times are wall-clock per image on one process, after one warm-up image; the detectors take turns on
each image so that load from other processes affects them alike. Compare rows within one run.
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

from facestyle.io.images import load_image  # noqa: E402
from facestyle.models.registry import detector as make_detector  # noqa: E402


class FacenetMTCNN:
    """facenet-pytorch's MTCNN class, default settings (min face 20, thresholds 0.6/0.7/0.7)."""

    name = "facenet-pytorch MTCNN"

    def __init__(self) -> None:
        from facenet_pytorch import MTCNN

        self.net = MTCNN(keep_all=True, device="cpu")

    def boxes(self, image: np.ndarray) -> np.ndarray:
        boxes, _ = self.net.detect(image)
        return np.zeros((0, 4)) if boxes is None else np.asarray(boxes)


class OpenCVHaar:
    """OpenCV's cascade with its own window grouping (minNeighbors=3), scale 1.1, min size 20."""

    name = "OpenCV Haar (own grouping)"

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def boxes(self, image: np.ndarray) -> np.ndarray:
        gray = self.cv2.cvtColor(image, self.cv2.COLOR_RGB2GRAY)
        rects = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=3, minSize=(20, 20))
        if len(rects) == 0:
            return np.zeros((0, 4))
        r = np.asarray(rects, float)
        return np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1)


class Ours:
    def __init__(self, name: str) -> None:
        self.det = make_detector(name)
        self.name = f"facestyle {name}"

    def boxes(self, image: np.ndarray) -> np.ndarray:
        faces = self.det.detect(image)
        return np.stack([f.box for f in faces]) if faces else np.zeros((0, 4))


def run_all(detectors: list, images: list[np.ndarray]) -> list[tuple[float, float, float]]:
    """Per detector: (centre detection rate, any-face rate, ms per image).

    Detectors take turns on each image, so load from other processes hits all of them alike.
    """
    for det in detectors:
        det.boxes(images[0])  # warm-up: lazy init, first-call allocations
    centre = np.zeros(len(detectors))
    anyface = np.zeros(len(detectors))
    seconds = np.zeros(len(detectors))
    for im in images:
        h, w = im.shape[:2]
        for k, det in enumerate(detectors):
            t0 = time.perf_counter()
            b = det.boxes(im)
            seconds[k] += time.perf_counter() - t0
            anyface[k] += len(b) > 0
            inside = (b[:, 0] <= w / 2) & (b[:, 2] >= w / 2) & (b[:, 1] <= h / 2) & (b[:, 3] >= h / 2)
            centre[k] += bool(inside.any())
    n = len(images)
    return [(centre[k] / n, anyface[k] / n, 1000 * seconds[k] / n) for k in range(len(detectors))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=200, help="images at 250 px")
    ap.add_argument("--n-large", type=int, default=40, help="images at 1024 px (slow)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    paths = sorted((args.data / "faces" / "lfw-view1" / "images").glob("*/*.jpg"))
    paths = random.Random(args.seed).sample(paths, max(args.n, args.n_large))
    detectors = [Ours("mtcnn"), FacenetMTCNN(), Ours("haar"), OpenCVHaar()]
    print(
        f"LFW View 1, {args.n} images at 250 px and {args.n_large} at 1024 px; "
        f"torch/OpenCV threads {args.threads}"
    )
    print()
    print(
        "| detector | rate 250 px | any 250 px | ms/img 250 px "
        "| rate 1024 px | any 1024 px | ms/img 1024 px |"
    )
    print("|---|---|---|---|---|---|---|")
    sets = {}
    for size, n in ((250, args.n), (1024, args.n_large)):
        sets[size] = [
            cv2.resize(load_image(p), (size, size), interpolation=cv2.INTER_CUBIC) for p in paths[:n]
        ]
    results = {size: run_all(detectors, sets[size]) for size in (250, 1024)}
    for k, det in enumerate(detectors):
        cells = []
        for size in (250, 1024):
            rate, anyf, ms = results[size][k]
            cells += [f"{rate:.3f}", f"{anyf:.3f}", f"{ms:.0f}"]
        print(f"| {det.name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
