"""Load any image a user is likely to hand us as an RGB uint8 array, and write images back.

Photos from phones carry their rotation in EXIF; scanned or dataset images come grey (AT&T PGM),
palette, CMYK or with alpha. Every model downstream wants upright RGB, so all of that is settled here,
once. Decompression bombs are refused before any pixel is decoded. :func:`as_rgb` is the one place
where "a path or an array" becomes an array, so every public function accepts both. :func:`save_image`
is the one image writer: the format follows the extension and the file appears whole or not at all.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facestyle.errors import ImageError, UsageError
from facestyle.io.files import atomic_write

#: A photo given by path or as an ``(H, W, 3)`` uint8 RGB array (grey ``(H, W)`` and RGBA are accepted).
ImageLike = str | os.PathLike | np.ndarray

#: What :func:`save_image` writes, by extension.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".pgm": "PPM", ".ppm": "PPM"}  # fmt: skip

#: Largest image we decode: 100 megapixels (e.g. 12500 x 8000). Larger files are refused from their
#: header, before a pixel is decoded (a decompression bomb never allocates its pixels).
MAX_PIXELS = 100_000_000


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read ``path`` and return an upright ``(H, W, 3)`` uint8 RGB array.

    Raises :class:`ImageError` with a one-line message for a missing, non-image, truncated or
    oversized file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {why_not_a_file(path)}")
    if not os.access(path, os.R_OK):
        raise ImageError(f"{path}: permission denied")
    try:
        # Our limit is max_pixels, checked from the header before any pixel is decoded. Pillow's own
        # bomb warning starts lower (89.5 MP) and would refuse images the limit allows; its error
        # (above 179 MP) only ever fires for images above our default limit anyway.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise _too_large(path, width, height, max_pixels)
                img.load()
                return to_rgb_array(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow refuses from the header above 2x its limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise ImageError(f"{path}: image has {size}, more than the {max_pixels:,} allowed") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from None


def why_not_a_file(path: Path) -> str:
    """What ``path`` is when it is not a regular file we can read, in a few words."""
    import errno
    import stat

    try:
        link = path.lstat()
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return exc.strerror or "cannot be read"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if stat.S_ISLNK(link.st_mode):
            return "is a broken symbolic link"
        return exc.strerror or "cannot be read"
    if stat.S_ISDIR(mode):
        return "is a directory, not an image file"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device file, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "not a regular file"


def _too_large(path: Path, width: int, height: int, max_pixels: int) -> ImageError:
    return ImageError(f"{path}: image is {width}x{height} pixels, more than the {max_pixels:,} allowed")


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


def as_rgb(image: ImageLike, label: str = "image") -> tuple[np.ndarray, str]:
    """``(array, label)`` for a path or an array: paths are read with :func:`load_image` (the label is
    the path), arrays are checked and made ``(H, W, 3)`` uint8 RGB (grey repeated, alpha dropped)."""
    if not isinstance(image, np.ndarray):
        return load_image(image), str(image)
    arr = image
    if arr.dtype != np.uint8:
        raise UsageError(f"{label}: image arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise UsageError(f"{label}: image arrays must be (H, W, 3) RGB, got shape {image.shape}")
    return np.ascontiguousarray(arr[..., :3]), label


def image_format(path: str | os.PathLike[str]) -> str:
    """The Pillow format :func:`save_image` uses for ``path``'s extension, or a one-line error."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise ImageError(
            f"{path}: unsupported image extension; use one of {', '.join(sorted(IMAGE_FORMATS))}"
        )
    return fmt


def save_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95) -> Path:
    """Write an ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey) array; the format follows the extension.

    The file is written whole or not at all (temporary file, then rename). The folder must exist:
    a missing output directory is a one-line :class:`ImageError`, not a silently created tree.
    """
    path = Path(path)
    fmt = image_format(path)
    if not path.parent.is_dir():
        raise ImageError(f"{path.parent}: output directory does not exist")
    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise ImageError(f"{path}: can only write uint8 (H, W[, 3]) images, got {arr.shape} {arr.dtype}")
    kwargs = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    picture = Image.fromarray(arr)
    try:
        return atomic_write(path, lambda tmp: picture.save(tmp, format=fmt, **kwargs), suffix=path.suffix)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from None
