"""Read-only storage for tests of readers and writers (importable from every test folder, like
made_files.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def read_only_view(folder: Path) -> Iterator[tuple[Path, str]]:
    """``folder`` made read-only for the block: (the path to use, how it was done).

    As root (as in CI) a read-only bind mount of ``folder`` beside it, the real thing: root ignores
    permissions. Otherwise ``folder`` and every directory in it lose their write permission. Which one
    ran is printed (``pytest -s``) and returned, so a test can say it."""
    if os.geteuid() == 0:
        view = folder.parent / f"{folder.name}-read-only"
        view.mkdir()
        subprocess.run(["mount", "--bind", str(folder), str(view)], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        how = "read-only bind mount (running as root)"
        folders: list[Path] = []
    else:
        view = folder
        folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for path in folders:
            path.chmod(0o500)
        how = "directories without write permission (not root)"
    print(f"\nread-only storage: {how}")
    try:
        yield view, how
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(view)], check=True)
        for path in folders:
            path.chmod(0o700)
