"""Locks: one writer at a time across processes, many readers at a time within a process.

SQLite already serialises its own transactions, but a gallery write is more than a transaction: the
index file is rewritten after it, and two processes racing to rewrite it could each leave a cache that
misses the other's rows. The writer lock is a kernel ``flock`` on ``<gallery>/lock``: it is released
by the kernel when a process dies, so a SIGKILLed writer never leaves the gallery locked (a lock file
that merely *exists* would). Readers never take it: they read a consistent SQLite snapshot and an
index file that is only ever replaced atomically.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from facestyle.errors import GalleryError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: fall back to the filelock package
    fcntl = None  # type: ignore[assignment]


class WriterLock:
    """Exclusive inter-process lock on a file, re-entrant within one thread of one process."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self.path = path
        self.timeout = timeout
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._fallback = None

    def acquire(self) -> None:
        self._thread_lock.acquire()
        if self._depth == 0:
            try:
                self._acquire_os()
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._release_os()
        self._thread_lock.release()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def _acquire_os(self) -> None:
        if fcntl is None:  # pragma: no cover
            from filelock import FileLock

            self._fallback = FileLock(str(self.path), timeout=self.timeout, mode=0o600)
            self._fallback.acquire()
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise GalleryError(
                        f"{self.path.parent}: another process has held the gallery lock for "
                        f"{self.timeout:.0f} s; try again later"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        self._fd = fd

    def _release_os(self) -> None:
        if self._fallback is not None:  # pragma: no cover
            self._fallback.release()
            self._fallback = None
            return
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class ReadWriteLock:
    """Many concurrent readers or one writer, for threads sharing one :class:`Gallery`.

    FAISS searches release the GIL and do not modify the index, so concurrent identify calls can run
    in parallel; enroll/remove mutate the in-memory index and must run alone. Writers are preferred so
    a stream of searches cannot starve an enrollment.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._writer_depth = 0
        self._waiting_writers = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:  # a writer may read what it is writing
                reentrant = True
            else:
                reentrant = False
                while self._writer is not None or self._waiting_writers:
                    self._cond.wait()
                self._readers += 1
        try:
            yield
        finally:
            if not reentrant:
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_depth += 1
            else:
                self._waiting_writers += 1
                while self._writer is not None or self._readers:
                    self._cond.wait()
                self._waiting_writers -= 1
                self._writer = me
                self._writer_depth = 1
        try:
            yield
        finally:
            with self._cond:
                self._writer_depth -= 1
                if self._writer_depth == 0:
                    self._writer = None
                    self._cond.notify_all()
