"""Cut an aligned face chip out of an image, given landmarks and a template.

A chip template is the five landmark positions, in chip pixels, that the embedder was trained to see.
Matching the embedder's own chip geometry matters more for accuracy than any other detail of the
pipeline: see :mod:`facestyle.align.templates` for how each template was measured.
"""

from __future__ import annotations

import cv2
import numpy as np

from facestyle.align.similarity import similarity_transform


def warp_chip(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Resample ``image`` through the 2x3 image->chip ``matrix`` into a ``size`` x ``size`` chip.

    Downscaling by more than 2x first blurs with INTER_AREA-like prefiltering (an image pyramid) so a
    large photo does not alias into the chip; borders are filled by replication, as dlib does not pad
    with black either.
    """
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    src = image
    m = matrix.astype(np.float64).copy()
    while scale < 0.5 and min(src.shape[:2]) > 2 * size:
        src = cv2.pyrDown(src)
        m[:, :2] *= 2.0  # a pixel of the half-size image covers two of the original
        scale *= 2.0
    return cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_face(image: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """The chip of ``size`` pixels whose five landmarks best match ``template`` (similarity transform)."""
    matrix = similarity_transform(np.asarray(landmarks, dtype=np.float64), template)
    return warp_chip(image, matrix, size)
