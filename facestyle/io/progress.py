"""The one progress protocol: library code reports long loops through it, callers decide how it shows.

A :data:`Progress` is a callable ``(items, total, label) -> items`` that yields the same items, usually
drawing a bar on the way. Library functions take one (default :func:`no_progress`), so training,
evaluation, heads and the CLI all report the same way; the CLI passes a rich bar on a TTY and nothing
under ``--quiet``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]


def no_progress(items: Iterable[Any], total: int, label: str) -> Iterable[Any]:
    """The silent :data:`Progress`: the items, unchanged."""
    return items
