"""Reading user files (images) into plain numpy arrays."""

from facestyle.io.images import MAX_PIXELS, load_image

__all__ = ["MAX_PIXELS", "load_image"]
