"""Chip templates: where each embedder expects MTCNN's five landmarks, in chip pixels.

Order: left eye, right eye, nose tip, left mouth corner, right mouth corner (MTCNN's points).

``DLIB_150`` was *measured*, not guessed: dlib's descriptor was trained on chips cut by
``dlib.get_face_chip`` from its own 5-point shape predictor (eye corners and nose base, padding 0.25).
On 276 LFW View 1 faces found by both dlib's HOG detector and MTCNN, MTCNN's landmarks were mapped
through dlib's image->chip transform (checked against ``get_face_chip``: mean |pixel diff| 0.5) and the
per-coordinate median taken (median absolute deviation 1.1-1.4 px for the eyes, 3-4.4 px for the nose
and mouth). Reproduce with ``python scripts/derive_chip_templates.py``.

``FACENET_160`` approximates facenet-pytorch's own input: MTCNN's box (margin 0) resized to 160x160.
Median landmark positions inside that crop on 150 LFW faces, made left/right symmetric. The box crop
stretches faces anisotropically, which a similarity transform cannot; this is the closest rigid fit.
"""

from __future__ import annotations

import numpy as np

DLIB_150 = np.array(
    [
        [48.587, 46.804],
        [103.292, 46.770],
        [75.519, 78.967],
        [52.027, 107.460],
        [100.109, 107.127],
    ],
    dtype=np.float64,
)

FACENET_160 = np.array(
    [
        [42.4, 62.25],
        [116.6, 62.25],
        [79.5, 94.17],
        [46.3, 121.4],
        [112.7, 121.4],
    ],
    dtype=np.float64,
)
