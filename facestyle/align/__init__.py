"""Face alignment: similarity transforms from five landmarks onto an embedder's chip template."""

from facestyle.align.similarity import apply_transform, invert_transform, similarity_transform
from facestyle.align.templates import DLIB_150, FACENET_160
from facestyle.align.warp import align_face, warp_chip

__all__ = [
    "DLIB_150",
    "FACENET_160",
    "align_face",
    "apply_transform",
    "invert_transform",
    "similarity_transform",
    "warp_chip",
]
