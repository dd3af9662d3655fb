"""Files in and out: images, tensor files, labelled folders, and the progress protocol.

The lowest layer with :mod:`facestyle.errors`: nothing here imports a model, and torch only inside the
tensor-file functions.
"""

from facestyle.io.images import MAX_PIXELS, ImageLike, as_rgb, load_image, save_image

__all__ = ["MAX_PIXELS", "ImageLike", "as_rgb", "load_image", "save_image"]
