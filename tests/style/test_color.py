"""Luminance transfer: output luminance from the stylised image, chroma from the content (YUV)."""

from __future__ import annotations

import numpy as np

from facestyle.style.color import preserve_colors, rgb_to_yuv, yuv_to_rgb


def test_yuv_round_trip_and_known_values():
    rgb = np.array([[255.0, 255.0, 255.0], [255.0, 0.0, 0.0]])
    yuv = rgb_to_yuv(rgb)
    assert np.allclose(yuv[0], [255.0, 0.0, 0.0], atol=0.01)  # white: full luma, no chroma
    assert np.isclose(yuv[1, 0], 0.299 * 255)  # BT.601 luma of pure red
    assert np.allclose(yuv_to_rgb(yuv), rgb, atol=1e-6)


def test_preserve_colors_takes_luma_from_stylised_and_chroma_from_content():
    rng = np.random.default_rng(0)
    # Mid-range values so the final clip to [0, 255] does not bite.
    content = rng.integers(90, 170, (16, 12, 3), dtype=np.uint8)
    stylised = rng.integers(90, 170, (16, 12, 3), dtype=np.uint8)
    out = preserve_colors(stylised, content)
    assert out.shape == content.shape and out.dtype == np.uint8
    yo, yc, ys = rgb_to_yuv(out), rgb_to_yuv(content), rgb_to_yuv(stylised)
    assert np.abs(yo[..., 1:] - yc[..., 1:]).max() < 1.0  # chroma kept to rounding
    assert np.abs(yo[..., 0] - ys[..., 0]).max() < 1.0  # luminance from the stylised image
    assert np.abs(yo[..., 1:] - ys[..., 1:]).mean() > 10.0  # and not the stylised image's chroma
