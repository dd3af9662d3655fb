"""Bulk enrollment: a folder per person, or ``name,path`` rows, into a gallery, resumably, with a row
of report per photo.

Enrolling a photo collection one ``enroll`` call at a time pays the models' start-up per call, and
one photo at a time leaves the network idle while a photo is decoded and searched for faces. Here:

1. **Plan** (main process, before any model work): every row's name is checked with the gallery's
   name rules and its file hashed (SHA-256 of its bytes, as ``enroll_image`` stores it). A
   ``(name, sha256)`` the gallery already holds (:meth:`Gallery.image_hashes`), or met earlier in the
   same run, is ``duplicate`` and is never decoded: a run killed halfway and started again does only
   what is left, and adds no template twice.
2. **Find** (a torch ``DataLoader``, ``workers`` processes; 0 = this one): decode, find the faces
   under the pipeline's face-finding policy (``crop``), take the one face (the largest with
   ``largest=True``) and align it to the embedder's chip. No face is ``no_face``; several faces
   without ``largest`` are ``several_faces`` and nothing is enrolled (as ``enroll_image`` refuses).
3. **Embed** (main process): chips of up to ``batch_size`` photos in one forward pass.
4. **Write** (main process): each photo's template in its own transaction (:meth:`Gallery.enroll`
   with the photo's hash). A row is reported ``ok`` only after its transaction committed, so a kill
   at any point loses nothing that was reported.

A photo that cannot be read, or has no usable face, is a row of the report; the run goes on. Only a
gallery problem (:class:`GalleryError`: locked too long, wrong model, read-only) stops it. The
gallery's search index is written once at the end (:meth:`Gallery.flush`), not per photo: writing
the FAISS file per photo would cost more than the photo. Only the public ``Gallery`` methods are used,
so any gallery backend works.

>>> with open_for_photos("gallery", autosave=False) as g:          # doctest: +SKIP
...     report = enroll_folder(g, "people/", workers=2)
...     report.summary()["ok"]
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facestyle.align.landmarks import landmarks_of
from facestyle.detect.faces import only_face
from facestyle.errors import (
    EXIT_BAD_INPUT,
    EXIT_NO_FACE,
    EXIT_OK,
    SEVERITY,
    FacestyleError,
    GalleryError,
    ImageError,
    NoFaceError,
    ParameterError,
    SeveralFacesError,
    UsageError,
)
from facestyle.gallery import check_name
from facestyle.gallery.photos import file_sha256
from facestyle.io.folders import is_image_file, scan_labelled_folder
from facestyle.io.images import load_image, why_not_a_file
from facestyle.io.progress import Progress, no_progress
from facestyle.threads import thread_count

#: A photo's outcome: enrolled; skipped (already enrolled: same name, same file content); no face
#: found; several faces (and ``largest`` not asked); not enrolled for another reason (``reason``).
STATUSES = ("ok", "duplicate", "no_face", "several_faces", "error")

#: Faces embedded in one forward pass (the embedder's own batch on CPU is 64; 32 keeps the report
#: close behind the photos).
DEFAULT_BATCH_SIZE = 32

#: Most worker processes chosen by default: on the 2-core machine measured, 2 workers beside the main
#: process's embedding were fastest (docs/bulk-enrollment.md). Larger machines are not measured: pass
#: ``workers`` there (face finding is ~85% of the CPU, so up to one worker per core should pay).
MAX_DEFAULT_WORKERS = 2


def _cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Worker processes for this machine: one per CPU core this process may use, at most
    :data:`MAX_DEFAULT_WORKERS`; 0 on a single core (workers would only compete with the embedder)."""
    cores = _cores()
    return 0 if cores < 2 else min(cores, MAX_DEFAULT_WORKERS)


def _torch_threads(n: int) -> contextlib.AbstractContextManager[None]:
    """Torch on ``n`` threads in this process for the run, as it was after. The workers take a core
    each; the main process's threads get the rest. Batch-1 detection and embedding on more threads
    than there are free cores were measured up to 9x slower (threads spin waiting for each other on a
    loaded 2-core machine: docs/bulk-enrollment.md)."""
    import torch

    return thread_count(torch.get_num_threads, torch.set_num_threads, n)


def check_bulk_options(workers: int | None, batch_size: int) -> int:
    """``workers`` (None: :func:`default_workers`) after checking both, before any work."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ParameterError("{workers} must be 0 (this process) or more", workers=workers)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ParameterError("{batch_size} must be 1 or more", batch_size=batch_size)
    return default_workers() if workers is None else workers


# ---------------------------------------------------------------------------------------- input rows
@dataclass(frozen=True)
class PhotoSpec:
    """One photo to enroll under ``name`` (as given: checked when planned). ``line`` is its line in
    a CSV file; ``problem`` a reason it cannot be enrolled, found while reading the input."""

    name: str | None
    path: str
    line: int | None = None
    problem: FacestyleError | None = None


def people_folder(people_dir: str | os.PathLike[str]) -> list[PhotoSpec]:
    """``PEOPLE/<name>/<photo>``: one folder per person, the folder's name the identity.

    Files and folders are taken in sorted order; hidden entries and files without an image suffix
    are ignored (:mod:`facestyle.io.folders`). An image directly in ``people_dir`` belongs to nobody:
    it is a row with a problem, so every photo there is accounted for. Raises :class:`UsageError`
    when ``people_dir`` is not a directory or holds no folder of images.
    """
    root = Path(people_dir)
    found = scan_labelled_folder(root)
    specs = [PhotoSpec(found.names[int(k)], str(p)) for p, k in zip(found.paths, found.labels, strict=True)]
    for loose in sorted(p for p in root.iterdir() if is_image_file(p)):
        why = UsageError(f"{loose}: not in a person's folder ({root}/<name>/<photo>)")
        specs.append(PhotoSpec(None, str(loose), problem=why))
    return specs


def csv_rows(csv_path: str | os.PathLike[str]) -> list[PhotoSpec]:
    """The ``name,path`` rows of a CSV file (UTF-8; a ``name,path`` header is optional; blank lines
    are skipped). Relative paths are taken from the CSV file's folder, so the file can move with its
    photos. A row without exactly two fields, or with an empty path, is kept as a row with a
    problem naming its line. Raises :class:`UsageError` when the file cannot be read or has no rows.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise UsageError(f"{path}: {why_not_a_file(path)}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text (expected name,path rows)") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    base = path.parent
    specs: list[PhotoSpec] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    first = True
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if first and [cell.strip().lower() for cell in row] == ["name", "path"]:
                first = False
                continue
            first = False
            if len(row) != 2 or not row[1].strip():
                why = f"{len(row)} fields" if len(row) != 2 else "an empty path"
                problem = UsageError(f"{path}:{line}: expected name,path, found {why}")
                specs.append(
                    PhotoSpec(row[0] if row else None, row[1] if len(row) > 1 else "", line, problem)
                )
                continue
            photo = Path(row[1].strip()).expanduser()
            specs.append(PhotoSpec(row[0], str(photo if photo.is_absolute() else base / photo), line))
    except csv.Error as exc:
        raise UsageError(f"{path}:{reader.line_num}: not CSV ({exc})") from None
    if not specs:
        raise UsageError(f"{path}: no name,path rows")
    return specs


# ---------------------------------------------------------------------------------------- the report
@dataclass
class BulkRow:
    """One photo's outcome. ``error`` keeps the exception behind an ``error``/``several_faces`` row
    (not in :meth:`to_dict`), so a caller can word it (the CLI names its flags)."""

    image: str
    name: str | None
    status: str
    reason: str | None = None
    line: int | None = None
    sha256: str | None = None
    faces: int | None = None  # faces found in the photo (None: not looked at)
    found_by: str | None = None  # how the enrolled face was found (detector | padded | whole)
    template_id: int | None = None
    created: bool = False  # the name was new to the gallery
    look_alikes: tuple[Any, ...] = ()
    error: FacestyleError | None = field(default=None, repr=False)
    index: int = -1  # position in the input

    @property
    def exit_code(self) -> int:
        """The code a batch command gives this row: 0 ok or done before, 3 no face, 2 several faces,
        else the error's own (5 for an unreadable photo, 2 for a bad input row)."""
        if self.status in ("ok", "duplicate"):
            return EXIT_OK
        if self.status == "no_face":
            return EXIT_NO_FACE
        return self.error.exit_code if self.error is not None else EXIT_BAD_INPUT

    def to_dict(self) -> dict:
        data: dict[str, Any] = {
            "image": self.image,
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "faces": self.faces,
            "found_by": self.found_by,
            "template_id": self.template_id,
            "created": self.created,
            "sha256": self.sha256,
            "look_alikes": [c.to_dict() for c in self.look_alikes],
        }
        if self.line is not None:
            data["line"] = self.line
        return data


@dataclass
class BulkReport:
    """Every photo's row (in input order) and how the run went. ``stages``: wall seconds the main
    process spent planning (hashing), waiting for found faces, embedding and writing; wall seconds the
    finders (workers, or this process) spent decoding and finding faces, summed over photos; and CPU
    seconds: the finders' (``find_cpu``) and the main process's (``main_cpu``, all its threads; with
    no workers it includes the finding). CPU seconds per photo say what a run costs whatever else
    the machine is doing; wall seconds say what it took."""

    rows: list[BulkRow]
    seconds: float
    workers: int
    batch_size: int
    stages: dict[str, float]

    @property
    def counts(self) -> dict[str, int]:
        have = Counter(r.status for r in self.rows)
        return {s: have.get(s, 0) for s in STATUSES}

    @property
    def exit_code(self) -> int:
        """0 when every photo is enrolled or was already; else the most serious row's code."""
        codes = [r.exit_code for r in self.rows]
        return max(codes, key=lambda c: SEVERITY.index(c) if c in SEVERITY else len(SEVERITY), default=0)

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.rows if r.status == "ok"]
        return {
            "photos": len(self.rows),
            **self.counts,
            "identities": len({r.name for r in ok}),
            "created": len({r.name for r in ok if r.created}),
            "seconds": round(self.seconds, 3),
            "photos_per_s": round(len(self.rows) / self.seconds, 2) if self.seconds > 0 else None,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
        }

    def to_dict(self) -> dict:
        return {"summary": self.summary(), "rows": [r.to_dict() for r in self.rows]}


# ---------------------------------------------------------------------------------------- finding
@dataclass
class _Found:
    """What a finder sends back for one photo (plain data: it crosses a process boundary)."""

    k: int  # position in the finder's item list
    status: str  # ok | no_face | several_faces | error
    faces: int = 0
    chip: np.ndarray | None = None
    box: list[float] | None = None
    found_by: str | None = None
    reason: str | None = None
    decode_s: float = 0.0
    find_s: float = 0.0
    cpu_s: float = 0.0  # CPU seconds of the finder's thread for this photo


class _FindFaces:
    """Map-style data set: photo k -> decoded, its faces found, the chosen one aligned.

    Runs in DataLoader workers (forked: the finder and the embedder's aligner are inherited, not
    pickled) or in this process. Never raises for a photo: a bad one is an ``error`` item.
    """

    def __init__(self, paths: Sequence[str], finder: Any, align: Callable, largest: bool) -> None:
        self.paths = list(paths)
        self.finder = finder
        self.align = align
        self.largest = largest

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, k: int) -> _Found:
        c0 = time.thread_time()
        found = self._find(k)
        found.cpu_s = time.thread_time() - c0
        return found

    def _find(self, k: int) -> _Found:
        t0 = time.perf_counter()
        try:
            image = load_image(self.paths[k])
        except FacestyleError as exc:
            return _Found(k, "error", reason=str(exc), decode_s=time.perf_counter() - t0)
        t1 = time.perf_counter()
        try:
            faces = self.finder.detect(image)
            face = only_face(faces, self.largest, self.paths[k])
            chip = np.ascontiguousarray(self.align(image, landmarks_of(face)))
        except NoFaceError:
            return _Found(k, "no_face", reason="no face found", decode_s=t1 - t0,
                          find_s=time.perf_counter() - t1)  # fmt: skip
        except SeveralFacesError:
            return _Found(k, "several_faces", len(faces), decode_s=t1 - t0, find_s=time.perf_counter() - t1)
        except FacestyleError as exc:
            return _Found(k, "error", reason=f"{self.paths[k]}: {exc}", decode_s=t1 - t0)
        except Exception as exc:  # a photo that breaks the detector must not stop the run
            return _Found(
                k, "error", reason=f"{self.paths[k]}: {type(exc).__name__}: {exc}", decode_s=t1 - t0
            )
        box = [round(float(v), 2) for v in np.asarray(face.box).ravel()[:4]]
        return _Found(k, "ok", len(faces), chip, box, face.found_by, decode_s=t1 - t0,
                      find_s=time.perf_counter() - t1)  # fmt: skip


def _as_is(item: Any) -> Any:
    """The DataLoader's collate: items stay Python objects (no tensors)."""
    return item


def _serial_opencv() -> contextlib.AbstractContextManager[None]:
    """OpenCV on one thread while workers are forked and run, as it was after.

    Set in this process, before the fork: a forked worker inherits OpenCV's thread pool without its
    threads, and reconfiguring it there (``cv2.setNumThreads`` in the worker) waits forever on a
    condition variable those threads held (seen: a test run hung in ``pthread_cond_destroy``). With
    one thread OpenCV never touches its pool, in the workers or here.
    """
    import cv2

    return thread_count(cv2.getNumThreads, cv2.setNumThreads, 1)


def _found_stream(dataset: _FindFaces, workers: int) -> Iterator[_Found]:
    """The found faces of every photo, in order: from ``workers`` processes, or this one."""
    if workers == 0 or len(dataset) == 0:
        for k in range(len(dataset)):
            yield dataset[k]
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=None,
        shuffle=False,
        num_workers=min(workers, len(dataset)),
        collate_fn=_as_is,
        prefetch_factor=8,
    )
    with _serial_opencv():
        yield from loader


# ---------------------------------------------------------------------------------------- the run
def enroll_folder(gallery: Any, people_dir: str | os.PathLike[str], **kwargs: Any) -> BulkReport:
    """Enroll ``PEOPLE/<name>/<photo>`` (:func:`people_folder`) into ``gallery``; see
    :func:`enroll_rows` for ``kwargs`` and the report."""
    return enroll_rows(gallery, people_folder(people_dir), **kwargs)


def enroll_csv(gallery: Any, csv_path: str | os.PathLike[str], **kwargs: Any) -> BulkReport:
    """Enroll the ``name,path`` rows of a CSV file (:func:`csv_rows`) into ``gallery``; see
    :func:`enroll_rows`."""
    return enroll_rows(gallery, csv_rows(csv_path), **kwargs)


def enroll_rows(
    gallery: Any,
    rows: Iterable[PhotoSpec | tuple[str, str | os.PathLike[str]]],
    *,
    largest: bool = False,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress = no_progress,
    on_row: Callable[[BulkRow], None] | None = None,
) -> BulkReport:
    """Enroll ``rows`` (``(name, path)`` pairs or :class:`PhotoSpec`) into ``gallery``, which must
    have a face pipeline (:func:`facestyle.gallery.faces.open_for_photos`); open it with
    ``autosave=False``: the index is written once, at the end.

    ``workers`` processes decode photos and find faces (0: this process; None:
    :func:`default_workers`); ``batch_size`` chips are embedded together. ``largest`` enrolls the
    largest face of a photo with several. ``progress`` shows the photos as they are done, and
    ``on_row`` gets each row as soon as it is final (an ``ok`` row after its commit), in the order
    they finish. Returns the :class:`BulkReport`, rows in input order. Raises :class:`GalleryError`
    (the gallery, not a photo, failed; what was reported stays enrolled) and, before any work,
    :class:`ParameterError` for bad options.
    """
    t_start = time.perf_counter()
    workers = check_bulk_options(workers, batch_size)
    pipe = getattr(gallery, "pipeline", None)
    if pipe is None:
        raise UsageError(
            "bulk enrollment needs a gallery opened with a face pipeline "
            "(facestyle.gallery.faces.open_for_photos)"
        )
    specs = [r if isinstance(r, PhotoSpec) else PhotoSpec(r[0], os.fspath(r[1])) for r in rows]
    finder = getattr(pipe, "finder", None) or pipe.detector
    if workers and _on_accelerator(finder):
        workers = 0  # a forked worker cannot use the parent's CUDA context: find faces here
    stages = dict.fromkeys(("plan", "wait", "embed", "write", "decode", "find", "find_cpu", "main_cpu"), 0.0)
    cpu0 = time.process_time()
    done: list[BulkRow] = []

    def emit(row: BulkRow) -> BulkRow:
        done.append(row)
        if on_row is not None:
            on_row(row)
        return row

    autosave = getattr(gallery, "autosave", False)
    if autosave:
        gallery.autosave = False  # one index write at the end, not one per photo
    try:
        with _torch_threads(max(1, _cores() - workers)):
            stream = _run(gallery, pipe, finder, specs, largest, workers, batch_size, stages)
            for _ in progress((emit(row) for row in stream), len(specs), "enrolling"):
                pass
    finally:
        if autosave:
            gallery.autosave = True
    # The index once, for the whole run. Not after a failure: what was committed is safe without it
    # (whoever opens the gallery next catches the index up), and a gallery that just failed (locked
    # for too long, say) would only fail again.
    gallery.flush()
    stages["main_cpu"] = time.process_time() - cpu0
    done.sort(key=lambda r: r.index)
    return BulkReport(done, time.perf_counter() - t_start, workers, batch_size, stages)


def _on_accelerator(finder: Any) -> bool:
    """Does the face finder run on a GPU (whose context forked workers cannot share)?"""
    nets = [getattr(finder, "onet", None), getattr(getattr(finder, "detector", finder), "onet", None)]
    for net in nets:
        params = getattr(net, "parameters", None)
        if params is not None:
            first = next(iter(params()), None)
            if first is not None and first.device.type != "cpu":
                return True
    return False


def _plan(
    gallery: Any, specs: list[PhotoSpec]
) -> tuple[list[BulkRow], list[tuple[int, str, str, PhotoSpec]]]:
    """Rows settled without reading a photo's pixels (bad rows, bad names, unreadable files, photos
    already enrolled), and the ``(index, name, sha256, spec)`` left to do."""
    settled: list[BulkRow] = []
    todo: list[tuple[int, str, str, PhotoSpec]] = []
    seen = set(gallery.image_hashes())
    for i, spec in enumerate(specs):
        row = BulkRow(spec.path, spec.name, "error", line=spec.line, index=i)
        try:
            if spec.problem is not None:
                raise spec.problem
            name = check_name(spec.name)  # type: ignore[arg-type]
            row.name = name
            try:
                sha = file_sha256(spec.path)
            except OSError as exc:
                why = why_not_a_file(Path(spec.path)) if not Path(spec.path).is_file() else exc.strerror
                raise ImageError(f"{spec.path}: {why}") from None
        except FacestyleError as exc:
            row.error, row.reason = exc, _line_prefixed(str(exc), spec.line)
            settled.append(row)
            continue
        if (name, sha) in seen:
            row.status, row.sha256, row.reason = "duplicate", sha, "already enrolled (same name, same photo)"
            settled.append(row)
            continue
        seen.add((name, sha))
        todo.append((i, name, sha, spec))
    return settled, todo


def _line_prefixed(message: str, line: int | None) -> str:
    return message if line is None or f":{line}:" in message else f"line {line}: {message}"


def _run(
    gallery: Any,
    pipe: Any,
    finder: Any,
    specs: list[PhotoSpec],
    largest: bool,
    workers: int,
    batch_size: int,
    stages: dict[str, float],
) -> Iterator[BulkRow]:
    """Plan, then find, embed and write: each row as soon as it is final."""
    t0 = time.perf_counter()
    settled, todo = _plan(gallery, specs)
    stages["plan"] += time.perf_counter() - t0
    yield from settled
    embedder = pipe.embedder
    detector_name = getattr(pipe.detector, "name", None)
    dataset = _FindFaces([spec.path for *_, spec in todo], finder, embedder.align, largest)
    pending: list[tuple[tuple[int, str, str, PhotoSpec], _Found]] = []
    stream = _found_stream(dataset, workers)
    while True:
        t0 = time.perf_counter()
        found = next(stream, None)
        stages["wait"] += time.perf_counter() - t0
        if found is None:
            break
        stages["decode"] += found.decode_s
        stages["find"] += found.find_s
        stages["find_cpu"] += found.cpu_s
        item = todo[found.k]
        if found.status == "ok":
            pending.append((item, found))
            if len(pending) >= batch_size:
                yield from _embed_and_write(gallery, embedder, detector_name, pending, stages)
                pending = []
        else:
            yield _not_enrolled(item, found)
    yield from _embed_and_write(gallery, embedder, detector_name, pending, stages)


def _not_enrolled(item: tuple[int, str, str, PhotoSpec], found: _Found) -> BulkRow:
    i, name, sha, spec = item
    row = BulkRow(spec.path, name, found.status, found.reason, spec.line, sha, found.faces or None, index=i)
    if found.status == "several_faces":
        row.error = SeveralFacesError(spec.path, found.faces)
        row.reason = str(row.error)
    elif found.status == "no_face":
        row.faces = 0
    elif found.status == "error":
        row.error = ImageError(found.reason or "error")
    return row


def _embed_and_write(
    gallery: Any,
    embedder: Any,
    detector_name: str | None,
    pending: list[tuple[tuple[int, str, str, PhotoSpec], _Found]],
    stages: dict[str, float],
) -> Iterator[BulkRow]:
    """Embed the chips of ``pending`` in one pass, then enroll each photo in its own transaction."""
    if not pending:
        return
    t0 = time.perf_counter()
    vectors = embedder.embed_chips(np.stack([found.chip for _, found in pending]))
    stages["embed"] += time.perf_counter() - t0
    for ((i, name, sha, spec), found), vec in zip(pending, vectors, strict=True):
        row = BulkRow(spec.path, name, "ok", None, spec.line, sha, found.faces, found.found_by, index=i)
        t0 = time.perf_counter()
        try:
            result = gallery.enroll(
                name, vec[None], image_sha256=sha, source=Path(spec.path).name, detector=detector_name,
                boxes=[found.box], found_by=found.found_by,
            )  # fmt: skip
        except GalleryError:
            raise  # the gallery failed, not this photo: stop (everything reported stays enrolled)
        except FacestyleError as exc:
            row.status, row.error, row.reason = "error", exc, str(exc)
        else:
            if result.duplicate:  # enrolled meanwhile (another process, or the same file listed twice)
                row.status, row.reason = "duplicate", "already enrolled (same name, same photo)"
            else:
                row.template_id = result.template_ids[0] if result.template_ids else None
                row.created, row.look_alikes = result.created, tuple(result.look_alikes)
        stages["write"] += time.perf_counter() - t0
        yield row
