"""Color preservation by luminance transfer (Gatys et al. 2016, "Preserving color in neural artistic
style transfer"; jcjohnson/neural-style's ``-original_colors 1``).

Style transfer repaints colours along with texture. To keep the photo's colours, take the *luminance*
(Y) of the stylised image and the *chroma* (U, V) of the content image. YUV (BT.601, the same matrix
jcjohnson uses) separates the two linearly, so the swap is exact up to the final clip to [0, 255].
"""

from __future__ import annotations

import numpy as np

#: RGB -> YUV (BT.601 analogue YUV); rows are Y, U, V.
RGB_TO_YUV = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.14713, -0.28886, 0.436],
        [0.615, -0.51499, -0.10001],
    ],
    dtype=np.float64,
)
YUV_TO_RGB = np.linalg.inv(RGB_TO_YUV)


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` RGB (any range) to YUV in the same range, as float64."""
    return np.asarray(rgb, dtype=np.float64) @ RGB_TO_YUV.T


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    return np.asarray(yuv, dtype=np.float64) @ YUV_TO_RGB.T


def preserve_colors(stylised: np.ndarray, content: np.ndarray) -> np.ndarray:
    """Luminance of ``stylised`` with the chroma of ``content`` (both ``(H, W, 3)`` uint8, same size)."""
    if stylised.shape != content.shape:
        raise ValueError(f"shape mismatch: stylised {stylised.shape} vs content {content.shape}")
    yuv = rgb_to_yuv(content)
    yuv[..., 0] = rgb_to_yuv(stylised)[..., 0]
    return np.clip(np.rint(yuv_to_rgb(yuv)), 0, 255).astype(np.uint8)
