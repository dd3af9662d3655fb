"""Errors a user can cause, each with the process exit code the CLI maps it to.

Exit codes follow grep's habit (0 match, 1 no match, 2 usage) and give each common failure its own code
so that scripts can tell "no face in the photo" from "the weights are not installed".
"""

from __future__ import annotations

from collections.abc import Callable

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


class ParameterError(UsageError):
    """A bad value of a named parameter, worded for whoever passed it.

    The library speaks in parameters and the CLI in flags, so the message is a template whose
    ``{name}`` fields are the parameters involved: ``str()`` renders them as Python keyword arguments
    (``size=8 is too small``) and :meth:`render` lets the CLI name its own flags (``--size 8 is too
    small``). ``params`` keeps the values, in the order given.

    >>> str(ParameterError("{size} is too small (at least 16 pixels)", size=8))
    'size=8 is too small (at least 16 pixels)'
    """

    def __init__(self, template: str, **params: object) -> None:
        self.template = template
        self.params = dict(params)
        super().__init__(self.render(python_argument))

    def render(self, show: Callable[[str, object], str]) -> str:
        """The message with each ``{name}`` replaced by ``show(name, value)``."""
        return self.template.format_map({k: show(k, v) for k, v in self.params.items()})


def literal(text: object) -> str:
    """``text`` made safe to embed in a :class:`ParameterError` template (braces doubled)."""
    return str(text).replace("{", "{{").replace("}", "}}")


def python_argument(name: str, value: object) -> str:
    """How a parameter reads in a Python call: ``size=8``."""
    return f"{name}={value!r}"


class ImageError(FacestyleError):
    """An input file that is not a readable, reasonably sized image."""

    exit_code = EXIT_BAD_INPUT


class NoFaceError(FacestyleError):
    exit_code = EXIT_NO_FACE


class SeveralFacesError(ParameterError):
    """A photo with several faces where one was needed; the message says how to take the largest."""

    def __init__(self, label: str, count: int) -> None:
        super().__init__(
            f"{literal(label)}: {count} faces found; pass {{largest}} to use the largest one", largest=True
        )


class WeightsMissingError(FacestyleError):
    exit_code = EXIT_WEIGHTS_MISSING


class ChecksumError(FacestyleError):
    exit_code = EXIT_WEIGHTS_MISSING


class GalleryError(FacestyleError):
    exit_code = EXIT_GALLERY


class GalleryParameterError(GalleryError, ParameterError):
    """A gallery refusal that a parameter asked for (``new=True`` on an enrolled name): the gallery's
    exit code, worded with the parameter so the CLI can name its flag."""


#: Exit codes from least to most serious (a batch or a combined error takes the worst).
SEVERITY = (
    EXIT_OK,
    EXIT_NO_MATCH,
    EXIT_USAGE,
    EXIT_NO_FACE,
    EXIT_BAD_INPUT,
    EXIT_WEIGHTS_MISSING,
    EXIT_GALLERY,
)


def combine(errors: list[FacestyleError]) -> FacestyleError:
    """One error for several independent failures (e.g. both photos of a comparison): the messages
    joined, of the most serious one's type (a ParameterError's template is not kept) and exit code."""
    if len(errors) == 1:
        return errors[0]
    worst = max(errors, key=lambda e: SEVERITY.index(e.exit_code))
    kind = UsageError if isinstance(worst, ParameterError) else type(worst)
    try:
        combined = kind("; ".join(str(e) for e in errors))
    except TypeError:  # a subclass with its own constructor
        combined = FacestyleError("; ".join(str(e) for e in errors))
    combined.exit_code = worst.exit_code
    return combined
