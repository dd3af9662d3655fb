"""The gallery's photo-level methods: photos (paths or arrays) in, typed results out.

:class:`PhotoMethods` is mixed into every gallery backend and works through the vector-level methods
(``enroll``, ``verify``, ``identify``, ``resolve_threshold``) and the face pipeline given to
``Gallery.open(pipeline=...)``. It only calls that pipeline (:class:`PhotoPipeline` says what it
needs), so this module, like the rest of the gallery core, never imports torch;
:mod:`facestyle.gallery.faces` is where pipelines are built.

Choices: ``verify_image`` checks the largest face of the probe photo (the claimed person is normally
its subject, as in ``facestyle compare``); ``identify_image(s)`` answers for every face.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from facestyle.checks import check_top_k
from facestyle.detect.faces import Face
from facestyle.errors import FacestyleError, UsageError
from facestyle.gallery.results import (
    Candidate,
    Enrollment,
    EnrollResult,
    FaceMatch,
    Identification,
    Match,
    Verification,
)
from facestyle.gallery.store import check_name

if TYPE_CHECKING:
    from facestyle.io.images import ImageLike

#: Photos embedded together (one forward pass) and searched together by ``identify_images``.
CHUNK = 32


class PhotoPipeline(Protocol):
    """What the photo methods use of a :class:`facestyle.api.FacePipeline`."""

    #: ``name``, ``version``, ``embedding_size``, ``default_threshold`` (and ``score_kind``).
    embedder: Any

    @property
    def detector(self) -> Any: ...

    def faces(self, image: ImageLike) -> list[Face]: ...

    def face(self, image: ImageLike, largest: bool = False, label: str | None = None) -> Face: ...

    def embed_files(self, paths: Iterable[str | Path]) -> Iterator[Any]: ...


def as_rgb(image: ImageLike, label: str = "image") -> tuple[np.ndarray, str]:
    """:func:`facestyle.io.images.as_rgb`, imported on first use: listing a gallery needs no PIL."""
    from facestyle.io.images import as_rgb as _as_rgb

    return _as_rgb(image, label)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class PhotoMethods:
    """``enroll_image``, ``verify_image``, ``identify_image`` and ``identify_images`` for a gallery."""

    path: Path
    pipeline: PhotoPipeline | None

    # The vector-level methods every backend provides (implemented by the class this is mixed into).
    enroll: Any
    check_enroll: Any
    verify: Any
    identify: Any
    resolve_threshold: Any
    threshold_info: Any
    show: Any

    def _photo_pipeline(self) -> PhotoPipeline:
        if self.pipeline is None:
            raise UsageError(
                f"{self.path}: photo methods need a face pipeline; open the gallery with "
                "Gallery.open(..., pipeline=FacePipeline(...)) or facestyle.gallery.faces.open_for_photos()"
            )
        return self.pipeline

    def enroll_image(
        self, name: str, image: ImageLike, largest: bool = False, *, new: bool = False, add: bool = False
    ) -> Enrollment:
        """Enroll the one face of ``image`` (a path or an RGB array) under ``name``.

        ``new``/``add`` and the ``created``, ``templates`` and ``look_alikes`` of the answer are those
        of :meth:`Gallery.enroll`.

        Raises :class:`NoFaceError`, :class:`SeveralFacesError` (unless ``largest``, which takes the
        largest face) or :class:`ImageError`. A file enrolled again for the same name adds nothing
        (``duplicate``); arrays have no file hash, so each call adds a template.
        """
        pipe = self._photo_pipeline()
        name = self.check_enroll(name, new=new, add=add)  # before the photo is read
        arr, label = as_rgb(image)
        face = pipe.face(arr, largest=largest, label=label)
        is_file = not isinstance(image, np.ndarray)
        result: EnrollResult = self.enroll(
            name,
            face.embedding,
            new=new,
            add=add,
            image_sha256=file_sha256(image) if is_file else None,  # type: ignore[arg-type]
            source=Path(image).name if is_file else None,  # type: ignore[arg-type]
            detector=getattr(pipe.detector, "name", None),
            found_by=face.found_by,
            boxes=[face.box],
        )
        return Enrollment(
            image=label,
            faces=(FaceMatch(face, result.name),),
            name=result.name,
            template_id=result.template_ids[0] if result.template_ids else None,
            duplicate=result.duplicate,
            created=result.created,
            templates=result.templates,
            look_alikes=result.look_alikes,
        )

    def verify_image(self, name: str, image: ImageLike, threshold: float | None = None) -> Verification:
        """1:1: is the largest face of ``image`` the enrolled ``name``? Its similarity to ``name``'s
        best template against ``threshold`` (default: the gallery's, see :meth:`resolve_threshold`).

        Raises :class:`GalleryError` if ``name`` is not enrolled (before the photo is read),
        :class:`NoFaceError` or :class:`ImageError`.
        """
        pipe = self._photo_pipeline()
        info = self.threshold_info(threshold)
        thr = info.threshold
        name = check_name(name)
        if name not in self:  # type: ignore[operator]
            self.show(name)  # the "not enrolled" GalleryError
        arr, label = as_rgb(image)
        face = pipe.face(arr, largest=True, label=label)
        score = float(self.verify(name, face.embedding))
        match = score >= thr
        answer = FaceMatch(face, name if match else None, score, (Candidate(name, score),))
        return Verification(image=label, faces=(answer,), claimed=name, match=match,
                            threshold=thr, threshold_source=info.source)  # fmt: skip

    def identify_image(
        self, image: ImageLike, top_k: int = 5, threshold: float | None = None
    ) -> Identification:
        """1:N for every face of one photo; see :meth:`identify_images` (an unreadable image is an
        answer with status ``error``, not an exception)."""
        pipe, info = self._identify_setup(top_k, threshold)
        return next(self._identify(pipe, [(image, "image")], top_k, info))

    def identify_images(
        self, images: Iterable[ImageLike], top_k: int = 5, threshold: float | None = None
    ) -> Iterator[Identification]:
        """1:N for every face of every photo, one :class:`Identification` per image, in order.

        A face scoring below ``threshold`` (default: the gallery's) is unknown (identity None); its
        ``top_k`` candidates are listed either way. Photos are embedded and searched in chunks of
        :data:`CHUNK`; an unreadable photo is reported (status ``error``) and the batch goes on.
        Arrays are labelled ``image1``, ``image2``, ... by position. Usage errors (no threshold,
        ``top_k`` < 1, no pipeline) are raised here, before the first photo.
        """
        pipe, info = self._identify_setup(top_k, threshold)
        labelled = ((image, f"image{k}") for k, image in enumerate(images, start=1))
        return self._identify(pipe, labelled, top_k, info)

    def _identify_setup(self, top_k: int, threshold: float | None) -> tuple[PhotoPipeline, Any]:
        """The pipeline and the threshold (an :class:`~facestyle.gallery.adaptive.AdaptiveThreshold`:
        value and source), settled once for the whole batch."""
        pipe = self._photo_pipeline()
        check_top_k(top_k)
        return pipe, self.threshold_info(threshold)

    def _identify(
        self, pipe: PhotoPipeline, labelled: Iterable[tuple[ImageLike, str]], top_k: int, info: Any
    ) -> Iterator[Identification]:
        thr, source = info.threshold, info.source
        for batch in _batches(labelled, CHUNK):
            found = _faces_of(pipe, batch)
            queries = [f.embedding for _, _, faces, _ in found for f in faces]
            try:
                matches: Iterator[Match] = iter(
                    self.identify(np.stack(queries), top_k=top_k, threshold=thr) if queries else ()
                )
            except FacestyleError as exc:
                for label, *_ in found:
                    yield Identification(image=label, status="error", error=str(exc))
                continue
            for label, status, faces, error in found:
                answers = tuple(FaceMatch.of(f, next(matches)) for f in faces)
                yield Identification(image=label, status=status, faces=answers, error=error,
                                     threshold=thr, threshold_source=source)  # fmt: skip


def _faces_of(
    pipe: PhotoPipeline, batch: list[tuple[ImageLike, str]]
) -> list[tuple[str, str, list[Face], str | None]]:
    """``(label, status, faces, error)`` per photo: files through ``embed_files`` (batched), arrays
    one by one; a bad photo becomes an ``error`` row."""
    files = [(i, image) for i, (image, _) in enumerate(batch) if not isinstance(image, np.ndarray)]
    rows: dict[int, tuple[str, str, list[Face], str | None]] = {}
    if files:
        results = pipe.embed_files([os.fspath(image) for _, image in files])  # type: ignore[arg-type]
        for (i, _), r in zip(files, results, strict=True):
            rows[i] = (r.path, r.status, list(r.faces), r.error)
    for i, (image, label) in enumerate(batch):
        if i in rows:
            continue
        try:
            faces = pipe.faces(as_rgb(image, label)[0])
        except FacestyleError as exc:
            rows[i] = (label, "error", [], str(exc))
        else:
            rows[i] = (label, "ok" if faces else "no_face", faces, None)
    return [rows[i] for i in range(len(batch))]
