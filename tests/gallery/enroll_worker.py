"""Subprocess used by the durability tests: enroll synthetic vectors and report each commit.

Usage: ``python enroll_worker.py GALLERY PREFIX COUNT [--no-autosave] [--barrier]``. Prints
``done NAME TIME`` (flushed) right after each ``Gallery.enroll`` returns, i.e. after its SQLite
transaction committed: those are the enrollments the tests require to survive a SIGKILL at any later
moment. TIME is ``time.monotonic()`` (one clock for every process of the machine). With
``--barrier`` the worker opens the gallery, prints ``ready`` and waits for a line on stdin before
enrolling, so that several workers start writing together.
"""

from __future__ import annotations

import hashlib
import sys
import time

import numpy as np

DIM = 128
MODEL = "synthetic-test-model"


def vector_for(name: str) -> np.ndarray:
    """A fixed unit vector per name, so a checker can recompute what was enrolled."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def main() -> None:
    from facestyle.gallery import Gallery

    path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    autosave = "--no-autosave" not in sys.argv
    barrier = "--barrier" in sys.argv
    if not barrier:
        print("ready", flush=True)
    with Gallery.open(path, model=MODEL, dim=DIM, autosave=autosave) as gallery:
        if barrier:
            print("ready", flush=True)
            sys.stdin.readline()
            print(f"go {time.monotonic():.6f}", flush=True)
        for i in range(count):
            name = f"{prefix}{i}"
            gallery.enroll(name, vector_for(name), image_sha256=hashlib.sha256(name.encode()).hexdigest())
            print(f"done {name} {time.monotonic():.6f}", flush=True)


if __name__ == "__main__":
    main()
