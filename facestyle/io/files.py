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
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from facestyle.errors import ImageError, ParameterError, UsageError, literal


def current_umask() -> int:
    """The process's file-creation mask (read without changing it where the OS allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only a fallback)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[str], Any], suffix: str = ".tmp", mode: int | None = None
) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``; returns ``path``.

    ``suffix`` lets writers that insist on an extension (``np.savez`` adds ``.npz``) keep it. The file
    gets ``mode`` (e.g. ``0o600`` for biometric data), else the permissions any new file gets here
    (``0o666`` less the umask), not the temporary file's owner-only ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode if mode is not None else 0o666 & ~current_umask())
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
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols before it fails
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign, truncated or pickled-code files
        if "weights_only" in str(exc):
            why = "it holds Python objects, which are never unpickled (weights_only)"
        else:
            why = f"corrupt, truncated or not a PyTorch file: {type(exc).__name__}"
        raise UsageError(f"{path}: not a readable {what} ({why})") from None


def file_key(path: str | os.PathLike[str]) -> str:
    """Identity of a file's current content for caches: absolute path, size and mtime.

    An edited (or replaced) file gets a new key, so a cache never serves a stale entry for it.
    """
    path = Path(path)
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def check_output_path(
    path: str | os.PathLike[str],
    *,
    param: str = "output",
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
    suffixes: Sequence[str] = (),
) -> Path:
    """Check an output file before any work is done, and return it.

    Refused, each in one line: a path that is (or resolves to) one of ``inputs`` unless ``overwrite``
    (a user's photo is never replaced by a result by accident), a suffix not in ``suffixes``, an
    existing directory, a missing directory to write into, and a directory we may not write.
    """
    path = Path(path)
    if suffixes and path.suffix.lower() not in {s.lower() for s in suffixes}:
        raise ParameterError(f"{{{param}}} must end in {' or '.join(suffixes)}", **{param: str(path)})
    if not overwrite:
        for item in inputs:
            if _same_file(path, Path(item)):
                raise ParameterError(
                    f"{{{param}}} is one of the inputs ({literal(item)}); it would be overwritten. "
                    "Choose another output, or pass {overwrite} to replace it",
                    **{param: str(path), "overwrite": True},
                )
    if path.is_dir():
        raise ParameterError(f"{{{param}}} is a directory; name a file", **{param: str(path)})
    folder = path.parent
    if not folder.is_dir():
        raise ImageError(f"{folder}: output directory does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ImageError(f"{folder}: output directory is not writable")
    return path


def check_output_folder(path: str | os.PathLike[str], *, param: str = "output") -> Path:
    """A folder to write files into: it may not exist yet (it is created), but it must not be a file,
    and the nearest existing parent must be writable. Checked before any work is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{{{param}}} is a file, not a folder to write into", **{param: str(path)})
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ImageError(f"{existing}: not writable")
    return path


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (through links and ``..``), for files that exist."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()
