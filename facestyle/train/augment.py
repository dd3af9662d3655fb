"""Chip augmentation for training: flip, crop and colour, on aligned uint8 chips in numpy.

Augmenting the aligned chip (not the photo) keeps the alignment the base model expects while still
showing the head the variation it must be invariant to: mirror images, small misalignments (a crop of
85-100% of the chip, resized back) and lighting/colour changes (brightness, contrast, saturation, and
sometimes grey, which matters for grey datasets such as AT&T).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentOptions:
    flip: bool = True
    crop_scale: float = 0.85  # smallest side fraction kept by a random crop
    brightness: float = 0.25  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.25
    saturation: float = 0.25
    grey_probability: float = 0.1


def augment_chip(
    chip: np.ndarray, rng: np.random.Generator, opts: AugmentOptions = AugmentOptions()
) -> np.ndarray:
    """One random view of an (S, S, 3) uint8 chip (a new array; the input is not modified)."""
    size = chip.shape[0]
    out = chip
    if opts.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    if opts.crop_scale < 1.0:
        side = int(round(size * rng.uniform(opts.crop_scale, 1.0)))
        y0, x0 = (int(rng.integers(0, size - side + 1)) for _ in range(2))
        out = cv2.resize(
            np.ascontiguousarray(out[y0 : y0 + side, x0 : x0 + side]), (size, size), cv2.INTER_LINEAR
        )
    img = out.astype(np.float32)
    img *= rng.uniform(1 - opts.brightness, 1 + opts.brightness)
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - opts.contrast, 1 + opts.contrast) + mean
    grey = img.mean(axis=2, keepdims=True)
    if rng.random() < opts.grey_probability:
        img = np.repeat(grey, 3, axis=2)
    else:
        img = (img - grey) * rng.uniform(1 - opts.saturation, 1 + opts.saturation) + grey
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def chip_views(
    chip: np.ndarray, n_views: int, rng: np.random.Generator, opts: AugmentOptions = AugmentOptions()
):
    """``n_views`` chips: the original first, its mirror second, then random augmentations."""
    views = [chip]
    if n_views > 1:
        views.append(np.ascontiguousarray(chip[:, ::-1]) if opts.flip else augment_chip(chip, rng, opts))
    while len(views) < n_views:
        views.append(augment_chip(chip, rng, opts))
    return np.stack(views[:n_views])
