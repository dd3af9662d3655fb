"""Keep freed memory inside the process while a CPU-heavy loop runs (glibc only).

Why this exists: a style-transfer step at 512 px allocates and frees ~1.5 GB of activations and gradients,
several blocks of 50-110 MB among them (VGG19's first block, the Winograd buffers). glibc serves a block
above its mmap threshold with a fresh ``mmap`` and gives it back to the kernel on ``free``. Its dynamic
threshold never rises above 32 MiB, so those blocks go back every time and the next step faults every
page in again, zeroed by the kernel: 160,000-390,000 minor page faults per 512 px step on this project's
2-core VM, against 0-2,000 inside this block (docs/style.md has the step times and peak memory).

:func:`retained_heap` raises the mmap threshold to 1 GiB and stops heap trimming for the duration of
a ``with`` block, so freed blocks go back to malloc's free lists and the next step reuses them. On exit
it sets the thresholds to where glibc's dynamic rule ends up in a process that has freed large blocks
(32 MiB mmap, 64 MiB trim); the dynamic rule cannot be switched back on once ``mallopt`` has been
called. It then calls ``malloc_trim`` so the retained memory goes back to the system. This is
process-wide state, so nested and concurrent blocks are counted and only the outermost exit restores.

The memory this keeps grows with the block sizes: 1.9 GiB more than the system heap at 1024x1024.
Most of it is glibc's per-thread cache holding the small chunks ``posix_memalign`` splits off large
blocks, which keeps freed neighbours from merging. glibc reads ``GLIBC_TUNABLES`` only at process
start, so this module cannot turn that cache off; a process started with
``GLIBC_TUNABLES=glibc.malloc.tcache_count=0`` keeps the speed at ~1.8 GiB less (docs/style.md).

On other C libraries (macOS, musl, Windows) the block does nothing. ``FACESTYLE_RETAIN_HEAP=0`` turns it
off, for measuring what it buys.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
import threading
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3

RETAIN_MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from (and go back to) the heap
RETAIN_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: the largest value it can hold
RESTORE_MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
RESTORE_TRIM_THRESHOLD = 64 << 20  # twice the mmap threshold, as the dynamic rule sets it

ENV = "FACESTYLE_RETAIN_HEAP"

_lock = threading.Lock()
_depth = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The running glibc, or None on any other C library (looked up once)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _set_thresholds(libc: ctypes.CDLL, mmap_threshold: int, trim_threshold: int) -> None:
    if libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold)) != 1:
        # glibc < 2.26 refuses thresholds above HEAP_MAX_SIZE / 2 (32 MiB): take the largest it allows.
        libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(RESTORE_MMAP_THRESHOLD))
    libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold))


def enabled() -> bool:
    """Whether :func:`retained_heap` acts here: glibc, and not turned off by ``FACESTYLE_RETAIN_HEAP``."""
    switched_off = os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off")
    return not switched_off and _glibc() is not None


@contextlib.contextmanager
def retained_heap() -> Iterator[bool]:
    """Within the block, freed memory stays in the process for reuse. Yields whether the block acts."""
    global _depth
    libc = _glibc() if enabled() else None
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            _set_thresholds(libc, RETAIN_MMAP_THRESHOLD, RETAIN_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set_thresholds(libc, RESTORE_MMAP_THRESHOLD, RESTORE_TRIM_THRESHOLD)
                libc.malloc_trim(0)
