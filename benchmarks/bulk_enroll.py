"""Bulk enrollment throughput: LFW View 1 photos (150x150 JPEGs, faces not cropped) into a fresh gallery
with 0, 1 and 2 worker processes, side by side in one run.

Each configuration enrolls the same photos (the first ``--photos`` of LFW View 1's image folders, in
sorted order, a folder per person) into its own new temporary gallery through the library
(:func:`facestyle.gallery.bulk.enroll_rows`), with one face pipeline loaded once for all of them and
warmed up first, so the rate is the photo work: hash, decode, find the face, align, embed, write each
template in its own transaction, and write the index at the end. Model loading is printed apart
(``facestyle enroll-dir`` pays it once per run, ~2.5 s). The files are read once before the timed runs,
so no configuration pays the disk alone. The per-stage split is in seconds: ``decode`` and ``find``
are summed over the finders (workers run in parallel, so they can exceed the wall time), ``wait`` is
the main process waiting for found faces, ``embed`` and ``write`` are the main process's own.
``cpu ms/photo`` is the CPU time of every process of the run (main and workers) per photo: what a
photo costs whatever else runs on the machine; ``cores got`` is that CPU time over the wall time.
On a shared machine the rate is bounded by the cores the run gets, so both are printed with the load.

    nice -n 10 python benchmarks/bulk_enroll.py                    # 1000 photos, 0/1/2 workers
    nice -n 10 python benchmarks/bulk_enroll.py --photos 200 --workers 0,2
    nice -n 10 python benchmarks/bulk_enroll.py --backend both    # directory and PostgreSQL galleries

``--backend postgres`` enrolls into galleries (one schema each) on a private pgserver (PostgreSQL 16 +
pgvector 0.6.2, unix socket only) started in the temp dir; the server's own CPU is not in ``cpu
ms/photo``.

Target (issue 21): >= 40 photos/s end to end on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# As `facestyle enroll-dir` does: idle OpenMP threads sleep instead of spinning, which on a loaded
# 2-core machine steals the core a worker process needs. Read when torch loads, so set before.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shared_data() -> Path:
    return Path(os.environ.get("FACESTYLE_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


def lfw_rows(n: int) -> list[tuple[str, str]]:
    """The first ``n`` LFW View 1 photos, as (person, path), in sorted order."""
    root = shared_data() / "faces" / "lfw-view1" / "images"
    paths = sorted(root.glob("*/*.jpg"))[:n]
    if not paths:
        sys.exit(f"no LFW images under {root}; set FACESTYLE_SHARED_DATA")
    return [(p.parent.name, str(p)) for p in paths]


def start_pgserver(pgdata: Path):
    """A private PostgreSQL server (pgserver) in ``pgdata``; the caller stops it with ``cleanup()``."""
    import pgserver

    return pgserver.get_server(str(pgdata), cleanup_mode="stop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000, help="LFW View 1 photos to enroll")
    parser.add_argument("--workers", default="0,1,2", help="worker counts to compare, comma-separated")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--crop", default="auto", help="face-finding mode (auto, detect, whole)")
    parser.add_argument(
        "--largest", action="store_true", help="enroll the largest face of a photo with several"
    )
    parser.add_argument(
        "--backend",
        choices=("dir", "postgres", "both"),
        default="dir",
        help="dir: SQLite + FAISS directories; postgres: a private pgserver; both: one after the other",
    )
    args = parser.parse_args()

    from facestyle.api import FacePipeline
    from facestyle.gallery import Gallery
    from facestyle.gallery.bulk import enroll_rows
    from facestyle.gallery.photos import file_sha256

    rows = lfw_rows(args.photos)
    for _, path in rows:  # into the page cache, for every configuration alike
        file_sha256(path)
    t0 = time.perf_counter()
    pipe = FacePipeline(crop=args.crop)
    _ = pipe.finder
    load_s = time.perf_counter() - t0
    counts = [int(w) for w in args.workers.split(",")]
    print(f"{len(rows)} LFW View 1 photos of {len({n for n, _ in rows})} people; crop={args.crop}, "
          f"largest={args.largest}, batch {args.batch_size}; models loaded in {load_s:.1f} s; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    backends = ("dir", "postgres") if args.backend == "both" else (args.backend,)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        with Gallery.open(Path(tmp) / "warm-up", pipeline=pipe, autosave=False) as g:
            enroll_rows(g, rows[:16], workers=0)
        for backend in backends:
            server = start_pgserver(Path(tmp) / "pgdata") if backend == "postgres" else None
            try:
                for w in counts:
                    where = f"{server.get_uri()}&gallery=w{w}" if server else Path(tmp) / f"w{w}"
                    with Gallery.open(where, pipeline=pipe, autosave=False) as g:
                        t0 = time.perf_counter()
                        report = enroll_rows(
                            g, rows, workers=w, batch_size=args.batch_size, largest=args.largest
                        )
                    seconds = time.perf_counter() - t0  # the index written at close included
                    results.append((backend, w, seconds, report, os.getloadavg()[0]))
            finally:
                if server is not None:
                    server.cleanup()
    head = (
        f"{'backend':>8} {'workers':>7} {'photos/s':>9} {'seconds':>8} {'ok':>5} {'no_face':>7} {'other':>5} "
    )
    head += f"{'cpu ms/photo':>12} {'cores got':>9}  wall s: plan wait embed write | decode find   load1"
    print(head)
    for backend, w, seconds, report, load1 in results:
        c, s = report.counts, report.stages
        other = c["several_faces"] + c["error"] + c["duplicate"]
        # with workers the finders' CPU is theirs; without, the main process's CPU includes it
        cpu = s["main_cpu"] + (s["find_cpu"] if w else 0.0)
        print(
            f"{backend:>8} {w:>7} {len(rows) / seconds:>9.1f} {seconds:>8.1f} "
            f"{c['ok']:>5} {c['no_face']:>7} {other:>5} "
            f"{1000 * cpu / len(rows):>12.1f} {cpu / seconds:>9.2f}  "
            f"{s['plan']:.1f} {s['wait']:.1f} {s['embed']:.1f} {s['write']:.1f} | "
            f"{s['decode']:.1f} {s['find']:.1f}   {load1:.2f}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
