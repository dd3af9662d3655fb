"""Measure where MTCNN's five landmarks land inside dlib's own 150x150 face chips.

dlib's descriptor was trained on chips cut by ``dlib.get_face_chip`` (5-point shape predictor, padding
0.25). MTCNN's five points (eye centres, nose tip, mouth corners) are not dlib's five points (eye
corners, nose base), so the template for our MTCNN-based alignment must be *measured*: for each LFW
View 1 image where both pipelines find the same face, map MTCNN's landmarks through dlib's image->chip
transform and take the per-coordinate median. The result is pasted into facestyle/align/templates.py;
this script is how to reproduce it.

Usage: python scripts/derive_chip_templates.py [LFW_IMAGES_DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from facestyle.align.similarity import apply_transform, similarity_transform
from facestyle.io import load_image
from facestyle.models.registry import detector, path_of


def dlib_image_to_chip(details) -> np.ndarray:
    """dlib's chip_details (rect, angle, size) as a 2x3 image->chip matrix, per dlib's mapping."""
    rect = details.rect
    cx, cy = (rect.left() + rect.right()) / 2.0, (rect.top() + rect.bottom()) / 2.0
    cos, sin = np.cos(details.angle), np.sin(details.angle)

    def rotate(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return (cos * dx - sin * dy + cx, sin * dx + cos * dy + cy)

    src = np.array(
        [
            rotate(rect.left(), rect.top()),
            rotate(rect.right(), rect.top()),
            rotate(rect.right(), rect.bottom()),
        ]
    )
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], dtype=np.float64)
    return similarity_transform(src, dst)


def main() -> int:
    import dlib

    parser = argparse.ArgumentParser()
    parser.add_argument(
        "images",
        nargs="?",
        default=str(Path(__file__).resolve().parents[1].parent / "shared/data/faces/lfw-view1/images"),
    )
    parser.add_argument("--limit", type=int, default=600)
    args = parser.parse_args()

    hog = dlib.get_frontal_face_detector()
    shape5 = dlib.shape_predictor(str(path_of("dlib-shape-predictor-5")))
    mtcnn = detector("mtcnn")
    paths = sorted(Path(args.images).glob("*/*.jpg"))
    step = max(1, len(paths) // args.limit)
    samples = []
    for path in paths[::step][: args.limit]:
        image = load_image(path)
        dets = hog(image, 1)
        faces = mtcnn.detect(image)
        if len(dets) != 1 or not faces:
            continue
        shape = shape5(image, dets[0])
        matrix = dlib_image_to_chip(dlib.get_face_chip_details(shape, size=150, padding=0.25))
        face = faces[0]
        centre = apply_transform(
            matrix, [[(face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2]]
        )[0]
        if not (0 <= centre[0] < 150 and 0 <= centre[1] < 150):
            continue  # MTCNN's best face is not dlib's face
        samples.append(apply_transform(matrix, face.landmarks))
    points = np.stack(samples)
    median = np.median(points, axis=0)
    spread = np.median(np.abs(points - median), axis=0)
    print(f"{len(samples)} faces", file=sys.stderr)
    print("template (x, y) per landmark:\n", np.array2string(median, precision=3, separator=", "))
    print("median absolute deviation:\n", np.array2string(spread, precision=3, separator=", "))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
