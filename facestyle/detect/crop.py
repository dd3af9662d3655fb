"""Write aligned face chips into a folder: the usual first step to build a training set.

``facestyle detect --crop DIR`` runs this on each photo; a folder of such chips per person is what
``facestyle classify train`` and the embedder training take. Chips are cut with the same template and
size the chosen embedder uses, so a chip written here is exactly what that model would see.
Faces without landmarks (Haar) get landmarks estimated from the box, as the face pipeline does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facestyle.detect.base import DetectedFace
from facestyle.detect.draw import save_image


def chip_geometry(model: str = "dlib-resnet-v1") -> tuple[np.ndarray, int]:
    """(template, size) of an embedder's chip, without loading its network where possible."""
    from facestyle.embed.embedder import BUILDERS

    if model in BUILDERS:
        from facestyle.models.registry import get_model

        return BUILDERS[model][1], int(get_model(model).input_size or 0)
    from facestyle.embed.embedder import load_embedder  # a trained checkpoint: its own template

    embedder = load_embedder(model)
    return embedder.template, embedder.input_size


def aligned_chips(
    image: np.ndarray, faces: list[DetectedFace], model: str = "dlib-resnet-v1"
) -> list[np.ndarray]:
    """One aligned ``(S, S, 3)`` uint8 chip per face."""
    from facestyle.align import align_face
    from facestyle.api import landmarks_of

    template, size = chip_geometry(model)
    return [align_face(image, landmarks_of(f), template, size) for f in faces]


def save_aligned_crops(
    image: np.ndarray,
    faces: list[DetectedFace],
    folder: str | Path,
    stem: str = "face",
    model: str = "dlib-resnet-v1",
    suffix: str = ".png",
) -> list[Path]:
    """Save ``<stem>_<k>.png`` (k = 0 for the first, i.e. largest, face) into ``folder``; returns paths.

    PNG by default: a lossless chip, so a training set built from crops is not re-compressed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, chip in enumerate(aligned_chips(image, faces, model)):
        paths.append(save_image(folder / f"{stem}_{k}{suffix}", chip))
    return paths
