"""The one folder scanner: ``ROOT/<label>/<image>`` trees, for classification and identity training.

Both a classifier's data set (a folder per class) and a face data set (a folder per person) are this
shape, so both read it here: sorted labels and files (runs are reproducible), hidden entries and
non-image suffixes ignored, labels as integer indices into ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestyle.errors import UsageError

#: Suffixes read as images (Pillow reads them all; the case of the suffix does not matter).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)


@dataclass
class LabelledImages:
    """Image paths with integer labels; ``names[label]`` is the folder name of a label."""

    root: Path
    names: list[str]
    paths: list[Path]
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> LabelledImages:
        """The images where ``mask`` (boolean, or indices) selects; label names are kept."""
        keep = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask, np.int64)
        return LabelledImages(self.root, self.names, [self.paths[i] for i in keep], self.labels[keep])


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan_labelled_folder(root: str | Path, min_images: int = 1, min_labels: int = 1) -> LabelledImages:
    """Every image of every sub-folder of ``root`` that holds at least ``min_images`` of them.

    Raises a one-line :class:`UsageError` when ``root`` is not a directory or fewer than
    ``min_labels`` sub-folders qualify.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    names: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in folder.iterdir() if is_image_file(f))
        if len(files) < max(1, min_images):
            continue
        names.append(folder.name)
        paths.extend(files)
        labels.extend([len(names) - 1] * len(files))
    if len(names) < max(1, min_labels):
        raise UsageError(
            f"{root}: needs at least {max(1, min_labels)} sub-folder(s) of images "
            f"({root}/<label>/<image>), found {len(names)}"
        )
    return LabelledImages(root, names, paths, np.asarray(labels, dtype=np.int64))
