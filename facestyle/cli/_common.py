"""What every command shares: JSON on stdout, messages on stderr, progress, and exit codes.

Commands stay thin: parse options, call the public API, print. User errors become one line on
stderr and the exit code of their :class:`~facestyle.errors.FacestyleError` class; a traceback is
shown only with ``--debug`` (or ``FACESTYLE_DEBUG=1``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape

from facestyle.errors import (
    EXIT_BAD_INPUT,
    EXIT_NO_FACE,
    EXIT_OK,
    SEVERITY,
    FacestyleError,
    ParameterError,
)

T = TypeVar("T")

#: stderr console: progress and human messages. stdout is reserved for results (and --json).
err = Console(stderr=True, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

STATE: dict[str, bool] = {"debug": bool(os.environ.get("FACESTYLE_DEBUG")), "quiet": False}

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars or notes on stderr.")
CropOpt = typer.Option(
    "auto",
    "--crop",
    help="How faces are found: auto (detect; if nothing, a padded copy; if still nothing, the whole image "
    "as the face where it looks like one), detect (the detector alone) or whole (each image is one face). "
    "Landmarks are always placed by a model.",
)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__fspath__"):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def print_json(data: Any) -> None:
    """Write ``data`` as one JSON document on stdout."""
    sys.stdout.write(json.dumps(data, default=_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def cli_flag(name: str, value: object, flags: dict[str, str] | None = None) -> str:
    """How a library parameter reads on the command line: ``size=8`` -> ``--size 8``.

    The flag is ``--`` plus the parameter name with dashes, unless ``flags`` maps it to another; a
    boolean reads as the bare flag, a sequence as comma-separated values.
    """
    flag = (flags or {}).get(name) or "--" + name.replace("_", "-")
    if isinstance(value, bool) or value is None:
        return flag
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    return f"{flag} {value}"


def describe(exc: BaseException | str, flags: dict[str, str] | None = None) -> str:
    """The one-line message of an error, a :class:`ParameterError` worded with this command's flags
    (``flags`` maps parameters whose flag is not ``--<name>``)."""
    if isinstance(exc, ParameterError):
        return exc.render(lambda name, value: cli_flag(name, value, flags))
    return str(exc)


def item_error(exc: BaseException | str, flags: dict[str, str] | None = None) -> None:
    """Report one failed item of a batch on stderr (the batch goes on); with ``--debug``, its traceback."""
    if STATE["debug"] and isinstance(exc, BaseException):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    err.print(f"[red]error:[/] {escape(describe(exc, flags))}", highlight=False)


def fail(
    exc: FacestyleError | str, code: int | None = None, flags: dict[str, str] | None = None
) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    message = describe(exc, flags)
    if isinstance(exc, FacestyleError) and code is None:
        code = exc.exit_code
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    return typer.Exit(code if code is not None else 1)


@contextlib.contextmanager
def user_errors(flags: dict[str, str] | None = None) -> Iterator[None]:
    """Turn :class:`FacestyleError` (and Ctrl-C) into a one-line message and an exit code.

    ``flags``: library parameter -> this command's flag, where they differ (see :func:`cli_flag`).
    """
    try:
        yield
    except FacestyleError as exc:
        if STATE["debug"]:
            raise
        raise fail(exc, flags=flags) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


def progress_fn(quiet: bool) -> Callable[[Iterable[T], int, str], Iterator[T]]:
    """The library's :data:`~facestyle.io.progress.Progress` protocol, drawn by :func:`progress`."""

    def fn(items: Iterable[T], total: int, label: str) -> Iterator[T]:
        return progress(items, total=total, label=label, quiet=quiet)

    return fn


def progress(
    items: Iterable[T], total: int | None = None, label: str = "", quiet: bool = False
) -> Iterator[T]:
    """Iterate with a rich progress bar on a TTY stderr; silently otherwise or when ``quiet``."""
    if quiet or STATE["quiet"] or not sys.stderr.isatty():
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)


def err_warn(message: str) -> None:
    """A warning on stderr, shown even with --quiet: it is about the result, not the progress."""
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


def checked_threshold(threshold: float | None) -> float | None:
    """``--threshold`` checked before any work (finite, in [-1, 1]), with a warning when it lets
    (almost) anyone through: different people score above 0 with the face models here, and every
    cosine is at least -1."""
    from facestyle.checks import check_threshold

    check_threshold(threshold)
    if threshold is not None and threshold <= 0.0:
        anyone = "every face" if threshold <= -1.0 else "almost any face"
        err_warn(f"--threshold {threshold} accepts {anyone} (different people score above 0)")
    return threshold


def note(message: str) -> None:
    """A human note on stderr, unless quiet."""
    if not STATE["quiet"]:
        err.print(message, highlight=False)


#: The exit code of each per-item status of a batch command.
STATUS_EXIT = {"ok": EXIT_OK, "no_face": EXIT_NO_FACE, "error": EXIT_BAD_INPUT}


def worst_exit(codes: Iterable[int]) -> int:
    """The most serious of ``codes`` (0 for none); codes outside :data:`SEVERITY` rank above all."""
    return max(codes, key=lambda c: SEVERITY.index(c) if c in SEVERITY else len(SEVERITY), default=EXIT_OK)
