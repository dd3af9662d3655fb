"""Load any image a user is likely to hand us as an RGB uint8 array.

Photos from phones carry their rotation in EXIF; scanned or dataset images come grey (AT&T PGM),
palette, CMYK or with alpha. Every model downstream wants upright RGB, so all of that is settled here,
once. Decompression bombs are refused before any pixel is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facestyle.errors import ImageError

#: Largest image we decode (about 100 megapixels, e.g. 12000 x 8000). Larger files are refused.
MAX_PIXELS = 100_000_000


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read ``path`` and return an upright ``(H, W, 3)`` uint8 RGB array.

    Raises :class:`ImageError` with a one-line message for a missing, non-image, truncated or
    oversized file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        f"{path}: image is {width}x{height} pixels, more than the {max_pixels:,} allowed"
                    )
                img.load()
                return to_rgb_array(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from None


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Apply EXIF orientation and convert any PIL mode to an RGB uint8 array."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite onto white: a transparent background reads as "paper", not as black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode == "I;16" or img.mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float32)
        arr = (arr / max(float(arr.max()), 1.0) * 255.0).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    elif img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / max(hi - lo, 1e-6) * 255.0).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
