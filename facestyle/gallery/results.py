"""What the gallery answers: vector-level results and the per-photo results with their JSON.

Torch-free (numpy and :class:`~facestyle.detect.faces.Face` only), so the gallery core and
``facestyle gallery list`` never pay for a model. The photo-level results hold the :class:`Face`
(box, score, landmarks, embedding) for an application to use; ``to_dict()`` is exactly what the CLI
prints with ``--json``, one document per image::

    {"image": str, "status": "ok" | "no_face" | "error",
     "faces": [{"box": [x1, y1, x2, y2], "identity": str | None, "score": float | None,
                "candidates": [{"name": str, "score": float}, ...]}],
     "error": str}                                   # only for a photo that failed: the reason

:class:`Enrollment` adds ``template_id`` and ``duplicate``; :class:`Verification` adds ``claimed``,
``match`` and ``threshold``. Boxes follow :meth:`Face.to_dict`'s rounding (2 decimals); scores are
rounded to 6 decimals.

The photo-level results compare by identity (``eq=False``): they hold numpy arrays, whose ``==`` is
element-wise.
"""

from __future__ import annotations

from dataclasses import dataclass

from facestyle.detect.faces import Face
from facestyle.errors import NoFaceError

#: Decimals of similarity scores in the JSON.
SCORE_DECIMALS = 6


def _score(value: float | None) -> float | None:
    return None if value is None else round(float(value), SCORE_DECIMALS)


# ---- vector level -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A name and its score: the cosine similarity of its best template with the query."""

    name: str
    score: float

    def to_dict(self) -> dict:
        return {"name": self.name, "score": _score(self.score)}


@dataclass(frozen=True)
class Match:
    """Answer for one query: ``identity`` is None ("unknown") when the best score is below threshold."""

    identity: str | None
    score: float | None
    candidates: tuple[Candidate, ...]
    #: The threshold the best score was held against, and where it came from
    #: (:meth:`facestyle.gallery.Gallery.threshold_info`).
    threshold: float | None = None
    threshold_source: str = ""


@dataclass(frozen=True)
class EnrollResult:
    name: str
    template_ids: tuple[int, ...]
    #: True when this image (by SHA-256) was already enrolled under this name: nothing was added.
    duplicate: bool = False
    created: bool = False
    #: How many templates ``name`` has now.
    templates: int = 0
    #: Other identities with a template near-identical to a new one (cosine above
    #: :data:`~facestyle.gallery.gallery.LOOK_ALIKE`), best first: the same photo or person under two
    #: names, which would make identify tie.
    look_alikes: tuple[Candidate, ...] = ()


# ---- photo level --------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class FaceMatch:
    """One face of a photo and the gallery's answer for it."""

    face: Face
    identity: str | None
    score: float | None = None
    candidates: tuple[Candidate, ...] = ()

    @classmethod
    def of(cls, face: Face, match: Match) -> FaceMatch:
        return cls(face, match.identity, match.score, match.candidates)

    def to_dict(self) -> dict:
        return {
            "box": self.face.to_dict(embedding=False)["box"],
            "found_by": self.face.found_by,
            "identity": self.identity,
            "score": _score(self.score),
            "candidates": [c.to_dict() for c in self.candidates],
        }


@dataclass(frozen=True, eq=False, kw_only=True)
class ImageAnswer:
    """The gallery's answer for one photo. ``image`` is the path as given, or a label for an array."""

    image: str
    status: str = "ok"
    faces: tuple[FaceMatch, ...] = ()
    error: str | None = None

    @classmethod
    def failed(cls, image: object, exc: BaseException | str, message: str | None = None) -> ImageAnswer:
        """The answer for a photo that could not be used: ``no_face`` for a :class:`NoFaceError`, else
        ``error``; ``message`` overrides ``str(exc)`` (the CLI words parameters as its flags)."""
        status = "no_face" if isinstance(exc, NoFaceError) else "error"
        return cls(image=str(image), status=status, error=message if message is not None else str(exc))

    def to_dict(self) -> dict:
        data: dict = {"image": self.image, "status": self.status, "faces": [f.to_dict() for f in self.faces]}
        if self.error:
            data["error"] = self.error
        return data


@dataclass(frozen=True, eq=False, kw_only=True)
class Identification(ImageAnswer):
    """1:N: every face of a photo with its best name (None below the threshold) and candidates."""

    threshold: float | None = None
    threshold_source: str = ""

    def to_dict(self) -> dict:
        data = super().to_dict()
        if self.threshold is not None:
            data.update(threshold=self.threshold, threshold_source=self.threshold_source)
        return data

    @property
    def known(self) -> bool:
        """The photo was read, has faces, and every one of them was identified."""
        return self.status == "ok" and bool(self.faces) and all(f.identity is not None for f in self.faces)


@dataclass(frozen=True, eq=False, kw_only=True)
class Enrollment(ImageAnswer):
    """A photo's one face enrolled under ``name``; ``duplicate`` when this file was already enrolled
    for ``name`` (nothing added, ``template_id`` None)."""

    name: str
    template_id: int | None
    duplicate: bool = False
    #: True when ``name`` was new to the gallery.
    created: bool = False
    #: How many templates ``name`` has after this photo.
    templates: int = 0
    #: See :attr:`EnrollResult.look_alikes`.
    look_alikes: tuple[Candidate, ...] = ()

    @property
    def face(self) -> Face:
        return self.faces[0].face

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "template_id": self.template_id,
            "duplicate": self.duplicate,
            "created": self.created,
            "templates": self.templates,
            "look_alikes": [c.to_dict() for c in self.look_alikes],
        }


@dataclass(frozen=True, eq=False, kw_only=True)
class Verification(ImageAnswer):
    """1:1: is the largest face of a photo the enrolled ``claimed`` person? ``score`` >= ``threshold``."""

    claimed: str
    match: bool
    threshold: float
    threshold_source: str = ""

    @property
    def face(self) -> Face:
        return self.faces[0].face

    @property
    def score(self) -> float:
        return float(self.faces[0].score)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        data = super().to_dict()
        return {
            **data,
            "claimed": self.claimed,
            "match": self.match,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
        }
