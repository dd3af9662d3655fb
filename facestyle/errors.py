"""Errors a user can cause, each with the process exit code the CLI maps it to.

Exit codes follow grep's habit (0 match, 1 no match, 2 usage) and give each common failure its own code
so that scripts can tell "no face in the photo" from "the weights are not installed".
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_USAGE = 2
EXIT_NO_FACE = 3
EXIT_WEIGHTS_MISSING = 4
EXIT_BAD_INPUT = 5
EXIT_GALLERY = 6


class FacestyleError(Exception):
    """Base class: a one-line, user-facing message and an exit code."""

    exit_code = EXIT_BAD_INPUT


class UsageError(FacestyleError):
    exit_code = EXIT_USAGE


class ImageError(FacestyleError):
    """An input file that is not a readable, reasonably sized image."""

    exit_code = EXIT_BAD_INPUT


class NoFaceError(FacestyleError):
    exit_code = EXIT_NO_FACE


class SeveralFacesError(FacestyleError):
    exit_code = EXIT_USAGE


class WeightsMissingError(FacestyleError):
    exit_code = EXIT_WEIGHTS_MISSING


class ChecksumError(FacestyleError):
    exit_code = EXIT_WEIGHTS_MISSING


class GalleryError(FacestyleError):
    exit_code = EXIT_GALLERY
