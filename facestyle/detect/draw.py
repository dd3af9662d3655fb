"""Draw detections onto a copy of an image, and save it: the quickest way to check a detector by eye.

Pure array in, array out (:func:`draw_faces`); writing the file is :func:`facestyle.io.images.save_image`,
so the CLI's ``--draw out.jpg`` and a notebook share the drawing code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from facestyle.detect.faces import Face
from facestyle.errors import ImageError

#: One color per landmark (RGB): eyes green, nose blue, mouth corners red, so a left/right swap shows.
LANDMARK_COLORS = ((0, 220, 0), (0, 220, 0), (40, 120, 255), (255, 40, 40), (255, 40, 40))


def draw_faces(
    image: np.ndarray,
    faces: Sequence[Face],
    color: tuple[int, int, int] = (255, 200, 0),
    thickness: int | None = None,
    show_scores: bool = True,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3 uint8 RGB) with each face's box, score (or label) and landmarks.

    Line thickness scales with the image (about 1/300 of its shorter side) unless given, so boxes stay
    visible on a 4000 px photo and do not swamp a 150 px thumbnail.
    """
    import cv2

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    canvas = np.ascontiguousarray(image).copy()
    side = min(canvas.shape[:2])
    thick = thickness or max(1, round(side / 300))
    radius = max(1, thick + 1)
    font_scale = max(0.35, side / 1000)
    for k, face in enumerate(faces):
        x1, y1, x2, y2 = (round(float(v)) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick)
        text = labels[k] if labels is not None else (f"{face.score:.2f}" if show_scores else "")
        if text:
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            ty = y1 - 2 if y1 - th - base - 2 >= 0 else y2 + th + 2
            cv2.rectangle(canvas, (x1, ty - th - base), (x1 + tw, ty + base // 2), color, -1)
            cv2.putText(
                canvas, text, (x1, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1
            )
        if face.landmarks is not None:
            for (x, y), c in zip(np.asarray(face.landmarks), LANDMARK_COLORS, strict=False):
                cv2.circle(canvas, (round(float(x)), round(float(y))), radius, c, -1, lineType=cv2.LINE_AA)
    return canvas
