"""Writing files so a crash never leaves half of one, and reading tensor files without unpickling code.

Every artefact the toolkit writes (imported weights, checkpoints, heads, feature caches, images) goes
through :func:`atomic_write`: the data lands in a temporary file in the same directory, then one
``os.replace`` makes it visible, so readers see the old file or the new one, never a torn one. Every
tensor file a user hands us is read by :func:`load_tensor_file` with ``weights_only=True``, and every
one we write goes through :func:`save_tensor_file`, so all formats (checkpoints, classifier and grid
heads) are written the same way. :func:`file_key` is the one identity of a file's content used by every
cache.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facestyle.errors import UsageError


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``; returns ``path``.

    ``suffix`` lets writers that insist on an extension (``np.savez`` adds ``.npz``) keep it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_array(path: str | os.PathLike[str], array: Any) -> Path:
    """``np.save`` atomically (the ``.npy`` appears whole or not at all)."""
    import numpy as np

    return atomic_write(path, lambda tmp: np.save(tmp, array), suffix=".npy")


def save_tensor_file(path: str | os.PathLike[str], payload: dict) -> Path:
    """``torch.save`` a dict of plain tensors, strings and numbers atomically (readable with
    ``weights_only=True``)."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_tensor_file(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; a missing or unreadable file is one-line error.

    ``what`` names the expected content in the message ("checkpoint", "classifier head", ...).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: {what} file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign, truncated or pickled-code files
        raise UsageError(f"{path}: not a readable {what} ({type(exc).__name__})") from None


def file_key(path: str | os.PathLike[str]) -> str:
    """Identity of a file's current content for caches: absolute path, size and mtime.

    An edited (or replaced) file gets a new key, so a cache never serves a stale entry for it.
    """
    path = Path(path)
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
