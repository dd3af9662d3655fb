"""A library's thread count set for a while, and put back after.

Torch, OpenCV and FAISS each keep their own count, and each is worth lowering somewhere: tiny
matrices, single-query searches and forked workers all lose more to thread start-up and spinning
than they gain (the places that do it say what was measured). One helper does the setting and the
restoring for all of them, so none can forget to restore.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def thread_count(get: Callable[[], int], set_to: Callable[[int], None], n: int) -> Iterator[None]:
    """Within the block the library runs on ``n`` threads (``set_to(n)``); after it, on as many as
    ``get()`` said before, also when the block raised."""
    before = get()
    set_to(n)
    try:
        yield
    finally:
        set_to(before)
