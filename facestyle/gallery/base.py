"""`Gallery`: the one gallery interface, and everything about it that does not depend on the storage.

A gallery is a persistent set of named, L2-normalised face embeddings with 1:1 and 1:N search. Two
backends store it:

- a directory (:mod:`facestyle.gallery.gallery`): SQLite plus a FAISS index, on one machine's disk;
  the default;
- a PostgreSQL schema (:mod:`facestyle.gallery.postgres`): pgvector with an HNSW index, for many
  machines sharing one population. ``postgresql://`` and ``postgres://`` locations go there.

:meth:`Gallery.open` picks the backend from the location, and every backend is a subclass of
:class:`Gallery`, so ``isinstance(g, Gallery)`` holds for both. This class owns what must answer the
same on both: the checks of names and vectors, model binding and its refusals, the threshold and its
precedence (given > stored > gallery-adaptive > model default), the impostor estimate, verify and
identify scoring (exact cosines, a name scored by its best template), look-alike warnings and the
shape of every result. A backend supplies storage primitives (the ``_``-prefixed methods at the end
of this class); it never decides a score or a threshold.

Scores are cosine similarities in [-1, 1]; a name with several templates scores as its best template
(max), because one good photo of a person is evidence enough and a mean would penalise people
enrolled from varied photos.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from facestyle.checks import check_threshold, check_top_k, require
from facestyle.errors import GalleryError, GalleryParameterError, ParameterError, UsageError, literal
from facestyle.gallery.adaptive import (
    DEFAULT_TARGET,
    AdaptiveThreshold,
    ImpostorEstimate,
    adaptive_threshold,
    estimate,
)
from facestyle.gallery.photos import PhotoMethods, PhotoPipeline
from facestyle.gallery.results import Candidate, EnrollResult, Match
from facestyle.gallery.store import IdentityInfo, check_name

log = logging.getLogger("facestyle.gallery")

DEFAULT_GALLERY = "gallery"
GALLERY_ENV = "FACESTYLE_GALLERY"

#: A new template this close (cosine) to another identity's is the same photo, or the same person,
#: under a second name: enroll warns, naming that identity (5-10x above the spread of genuine pairs).
LOOK_ALIKE = 0.995

#: Up to this many templates the impostor estimate is exact (all pairs, brute force, well under a
#: second); above, it is taken through the search for a sample of identities.
EXACT_TEMPLATES = 5_000
#: Identities whose nearest other identity is measured above :data:`EXACT_TEMPLATES`.
SAMPLED_IDENTITIES = 2_000
#: The stored impostor estimate stands while the templates enrolled or removed since it was made are
#: at most this share of those it was made from; a write that takes it past is followed by a new one.
#: Below 100 templates any change renews it (a few ms); at 5,000, every 50 changes (0.13 s each), so a
#: bulk enrollment does not pay a full estimate per photo.
ESTIMATE_STALE_SHARE = 0.01

#: ``scheme://`` at the start of a location: a URL, never a directory name.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

Location = Path | str


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from ``$name``, else ``default``; anything else is a UsageError."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{name}={text!r} is not a positive number of seconds")
    return value


def is_url(location: object) -> bool:
    """Whether ``location`` is a URL (``postgresql://...``) rather than a directory."""
    return isinstance(location, str) and bool(_URL.match(location))


def resolve_location(location: str | os.PathLike[str] | None = None) -> Location:
    """``location`` if given, else ``$FACESTYLE_GALLERY``, else ``./gallery``: a URL stays the string
    it is (a :class:`Path` would fold its ``//``), anything else is a directory :class:`Path`."""
    text = os.fspath(location) if location else (os.environ.get(GALLERY_ENV) or DEFAULT_GALLERY)
    return text if is_url(text) else Path(text).expanduser()


def backend_for(location: Location) -> type[Gallery]:
    """The backend class that stores galleries at ``location``."""
    for backend in Gallery.backends:
        if backend.accepts(location):
            return backend
    scheme = str(location).split("://", 1)[0]
    raise GalleryError(
        f"{scheme}://...: unknown kind of gallery location; give a directory or a postgresql:// URL"
    )


def gallery_exists(location: str | os.PathLike[str] | None = None) -> bool:
    """Is there a gallery at ``location`` (resolved as in :func:`resolve_location`)?"""
    loc = resolve_location(location)
    return backend_for(loc).exists(loc)


def bound_model(location: str | os.PathLike[str] | None = None) -> str | None:
    """The model the gallery at ``location`` is bound to; None when there is no gallery there or
    nothing bound it yet. Reads one value: no index is loaded, no model is built."""
    loc = resolve_location(location)
    return backend_for(loc).stored_model(loc)


def no_gallery_here(location: Location) -> GalleryError:
    return GalleryError(f"{location}: no gallery here (enroll someone first, or point to another gallery)")


def model_mismatch(location: Location, have: str, want: str) -> GalleryError:
    """The error for embeddings of model ``want`` offered to a gallery of model ``have``."""
    return GalleryError(
        f"{location} holds embeddings of model {have!r}, not {want!r}; scores between "
        f"models are meaningless: use another gallery, or the model {have!r}"
    )


def read_only_error(location: Location, why: str = "") -> GalleryError:
    """The one message for a write to a gallery that cannot be written."""
    reason = f" ({why})" if why else " (opened read-only)"
    return GalleryError(f"{location}: read-only gallery{reason}; reads work, writes need a writable copy")


def unit_rows(embeddings: np.ndarray, dim: int | None) -> np.ndarray:
    """``embeddings`` as a C-contiguous (N, D) float32 array with unit rows; refuse bad input."""
    try:
        arr = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as exc:  # text, None, ragged rows
        raise UsageError(f"embeddings must be an (N, D) array of numbers ({exc})") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise UsageError(f"expected one or more embeddings, got an array of shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise GalleryError(f"embeddings have {arr.shape[1]} dimensions; this gallery holds {dim}")
    if not np.all(np.isfinite(arr)):
        raise UsageError("embeddings contain NaN or infinity")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if np.any(norms < 1e-6):
        raise UsageError("an embedding is the zero vector")
    return np.ascontiguousarray(arr / norms, dtype=np.float32)


def box_text(box: Sequence[float]) -> str:
    """A face box as stored with its template (JSON, 2 decimals)."""
    return json.dumps([round(float(b), 2) for b in box])


def check_expected(name: str, templates: int | None, new: bool, add: bool) -> None:
    """``new`` wants ``name`` absent, ``add`` wants it present (``templates``: its count, None when
    absent). Backends call this inside the write transaction that acts on the answer."""
    if new and templates is not None:
        raise GalleryParameterError(
            f"{literal(repr(name))} is already enrolled ({templates} template{'s' * (templates != 1)}); "
            "{new} refuses an existing name",
            new=True,
        )
    if add and templates is None:
        raise GalleryParameterError(
            f"{literal(repr(name))} is not enrolled; {{add}} only adds to an existing name", add=True
        )


def best_per_name(scores: np.ndarray, owners: Sequence[str], top_k: int) -> list[Candidate]:
    """The ``top_k`` names of templates scored ``scores`` (best first), each by its best template."""
    best: dict[str, float] = {}
    for i in np.argsort(-scores, kind="stable"):
        owner = owners[i]
        if owner not in best:
            best[owner] = float(scores[i])
            if len(best) == top_k:
                break
    return [Candidate(n, min(1.0, s)) for n, s in best.items()]


class Gallery(PhotoMethods):
    """A gallery opened for use. Create with :meth:`Gallery.open`; close (or use ``with``).

    ``path`` is where it lives, as shown in messages: a directory :class:`Path`, or a PostgreSQL URL
    without its password.
    """

    #: The backends, in the order :func:`backend_for` asks them (each subclass with a ``backend`` name
    #: registers itself when its module is imported; :mod:`facestyle.gallery` imports them all).
    backends: ClassVar[list[type[Gallery]]] = []
    #: This backend's name, as ``gallery stats`` reports it.
    backend: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.backend and cls not in Gallery.backends:
            Gallery.backends.append(cls)

    def __init__(
        self,
        location: Location,
        *,
        read_only: bool = False,
        autosave: bool = True,
        default_threshold: float | None = None,
        on_note: Callable[[str], None] | None = None,
        pipeline: PhotoPipeline | None = None,
        stranger_rate: float | None = DEFAULT_TARGET,
    ) -> None:
        self.path: Any = location
        #: The share of strangers the adaptive threshold aims to accept per probe (None: adaptation off).
        self.stranger_rate = stranger_rate
        self._estimate: tuple[int, ImpostorEstimate] | None = None  # (generation, estimate)
        #: The face pipeline of the photo-level methods (None: vectors only).
        self.pipeline = pipeline
        self.read_only = read_only
        self.autosave = autosave
        self._on_note = on_note
        self._default_threshold = default_threshold
        self._dim: int | None = None
        self._closed = False

    # ---- opening and closing --------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        pipeline: PhotoPipeline | None = None,
        model: str | None = None,
        dim: int | None = None,
        model_version: str | None = None,
        create: bool = True,
        read_only: bool = False,
        autosave: bool = True,
        default_threshold: float | None = None,
        on_note: Callable[[str], None] | None = None,
        stranger_rate: float | None = DEFAULT_TARGET,
    ) -> Gallery:
        """Open (with ``create``, make) the gallery at ``path``: a directory, or a ``postgresql://``
        URL (default: :func:`resolve_location`: ``$FACESTYLE_GALLERY``, else ``./gallery``).

        ``pipeline`` (a :class:`facestyle.api.FacePipeline`) enables the photo-level methods, and its
        embedder names the model, embedding size, weights version and default threshold. Without
        one, ``model``/``dim``/``model_version`` name the embedder whose vectors this caller will store
        or search; a pipeline together with a different ``model``, ``dim`` or ``model_version`` is a
        :class:`UsageError`. A new gallery is bound to them; an existing one refuses another model or
        other weights, because similarities between embeddings of two models are meaningless.
        ``default_threshold`` is the model's threshold (default: the pipeline's model's).

        Without a threshold passed to a search, the threshold is, in this order: one stored in the
        gallery (``facestyle calibrate``, :meth:`set_threshold`), the gallery-adaptive one (aiming at
        ``stranger_rate`` of strangers accepted per probe, never below the model's;
        :mod:`facestyle.gallery.adaptive`; ``stranger_rate=None`` turns it off), the model's.
        """
        if stranger_rate is not None:
            require(
                isinstance(stranger_rate, int | float) and 0.0 < stranger_rate < 1.0,
                "{stranger_rate} must be between 0 and 1 (a share of strangers)",
                stranger_rate=stranger_rate,
            )
        if pipeline is not None:
            model, dim, model_version, default_threshold = _from_pipeline(
                pipeline, model, dim, model_version, default_threshold
            )
        location = resolve_location(path)
        backend = cls if cls.backend else backend_for(location)
        gallery = backend(
            location,
            read_only=read_only,
            autosave=autosave,
            default_threshold=default_threshold,
            on_note=on_note,
            pipeline=pipeline,
            stranger_rate=stranger_rate,
        )
        try:
            gallery._attach(create)
            gallery._bind_model(model, dim, model_version)
            gallery._opened()
        except BaseException:
            gallery._release()
            raise
        return gallery

    def close(self) -> None:
        """Write what is pending (the directory backend's index) and let go of the storage. Idempotent."""
        if self._closed:
            return
        try:
            if not self.read_only:
                self.flush()
        finally:
            self._closed = True
            self._release()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise GalleryError(f"{self.path}: gallery is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.read_only:
            raise read_only_error(self.path)

    def _note(self, message: str) -> None:
        if self._on_note is not None:
            self._on_note(message)
        else:
            log.warning(message)

    def _not_enrolled(self, name: str) -> GalleryError:
        return GalleryError(f"{name!r} is not enrolled in {self.path}")

    # ---- model binding and metadata -------------------------------------------------------------
    @property
    def model(self) -> str | None:
        return self._meta("model")

    @property
    def model_version(self) -> str | None:
        return self._meta("model_version")

    @property
    def dim(self) -> int | None:
        if self._dim is None:  # bound once, never changes: cache it (saves a query per search)
            value = self._meta("dim")
            self._dim = None if value is None else int(value)
        return self._dim

    def _bound_dim(self) -> int:
        dim = self.dim
        if dim is None:
            raise GalleryError(
                f"{self.path}: the gallery is not bound to a model; open it with pipeline= "
                "(or model= and dim=)"
            )
        return dim

    def _bind_model(self, model: str | None, dim: int | None, version: str | None) -> None:
        have_model, have_dim, have_version = (self._meta(k) for k in ("model", "dim", "model_version"))
        if have_model is None:
            if model is None:
                return
            if dim is None:
                raise UsageError("binding a gallery to a model needs the embedding size (dim)")
            if self.read_only:
                return
            self._bind_storage(model, int(dim), version)  # a no-op if another process bound it meanwhile
            return self._bind_model(model, dim, version)
        if model is not None and model != have_model:
            raise model_mismatch(self.path, have_model, model)
        if dim is not None and have_dim is not None and int(have_dim) != int(dim):
            raise GalleryError(f"{self.path} holds {have_dim}-d embeddings, not {dim}-d")
        if version and have_version and version != have_version:
            raise GalleryError(
                f"{self.path} was enrolled with {have_model} weights {have_version}, these are {version}; "
                "re-enroll into a new gallery"
            )
        if version and not have_version and model is not None and not self.read_only:
            # Bound by a caller that did not know the weights version: record it now, so that from
            # here on other weights are refused.
            self._write_meta({"model_version": version}, if_absent="model_version")

    # ---- the threshold ---------------------------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        """The threshold a search uses when none is passed (:meth:`threshold_info`), or None when
        there is none (no stored threshold and a model without a measured default)."""
        try:
            return self.threshold_info().threshold
        except UsageError:
            return None

    def model_threshold(self) -> float | None:
        """The model's measured default threshold (None for a model without one)."""
        if self._default_threshold is not None:
            return self._default_threshold
        model = self.model
        if model is None:
            return None
        try:
            from facestyle.models.registry import get_model

            return get_model(model).default_threshold
        except Exception:  # an unregistered (e.g. fine-tuned checkpoint) model has no default
            return None

    def threshold_info(self, threshold: float | None = None) -> AdaptiveThreshold:
        """The threshold a search uses and where it comes from, in order: ``threshold`` itself
        (checked: a finite cosine), a stored one (``calibrate``), the gallery-adaptive one
        (:meth:`impostor_estimate`, never below the model's), the model's. UsageError if none."""
        if threshold is not None:
            return AdaptiveThreshold(float(check_threshold(threshold)), "given", adapted=False)  # type: ignore[arg-type]
        stored = self.stored_threshold()
        if stored is not None:
            return AdaptiveThreshold(stored[0], stored[1], adapted=False)
        default = self.model_threshold()
        if default is None:
            raise UsageError(
                "no threshold: this gallery stores none and its model has no measured default; pass one"
            )
        if self.stranger_rate is None:
            return AdaptiveThreshold(float(default), "model default (adaptation off)", adapted=False)
        return adaptive_threshold(self.impostor_estimate(), float(default), self.stranger_rate)

    def impostor_estimate(self) -> ImpostorEstimate:
        """Each identity's nearest other identity (:mod:`facestyle.gallery.adaptive`): part of the
        gallery's stored state. Every write that enrolls or removes templates renews the stored
        estimate once the changes since it was made pass :data:`ESTIMATE_STALE_SHARE` of its
        templates (a rename changes no score). A reader takes the stored one while it stands, and
        otherwise (a gallery written before estimates were stored) computes it in memory. Exact up to
        :data:`EXACT_TEMPLATES` templates; above, for a seeded sample of :data:`SAMPLED_IDENTITIES`
        identities, through the search."""
        self._check_open()
        gen = self._generation()
        if self._estimate is not None and self._estimate[0] == gen:
            return self._estimate[1]
        content = self._content()
        result = self._stored_estimate(content)
        if result is None:
            result = self._compute_estimate(content)
        self._estimate = (gen, result)
        return result

    def _content(self) -> tuple[int, int]:
        """(templates, last template id): what tells how much the templates changed since a time."""
        return self._counts()[1], self._last_template_id()

    def _stored_estimate(self, content: tuple[int, int]) -> ImpostorEstimate | None:
        """The stored estimate if it still stands for ``content`` (see :data:`ESTIMATE_STALE_SHARE`)."""
        text = self._meta("impostor_estimate")
        if text is None:
            return None
        try:
            data = json.loads(text)
            made_from, made_at = int(data["templates"]), int(data["last_template_id"])
            stored = ImpostorEstimate.from_dict(data)
        except (ValueError, KeyError, TypeError):
            return None  # not ours to trust: computed again
        templates, last_id = content
        added = last_id - made_at
        removed = made_from + added - templates
        if added < 0 or removed < 0:
            return None  # another gallery's state (a restored backup): computed again
        return stored if added + removed <= math.floor(ESTIMATE_STALE_SHARE * made_from) else None

    def _compute_estimate(self, content: tuple[int, int]) -> ImpostorEstimate:
        n_templates = content[0]
        if n_templates == 0 or self.dim is None:
            return ImpostorEstimate(np.zeros(0))
        if n_templates <= EXACT_TEMPLATES:
            vecs, owners = self._labelled_vectors(None)
            return estimate(_unit(vecs), owners)
        return self._sampled_estimate()

    def _renew_estimate(self) -> None:
        """After a write that enrolled or removed templates: store a new estimate if the stored one
        no longer stands. A failure here never undoes the write: readers compute it instead."""
        content = self._content()
        if self._stored_estimate(content) is not None:
            return
        fresh = self._compute_estimate(content)
        record = {  # full precision (JSON keeps a float64 exactly): every process reads the same threshold
            "identities": fresh.identities,
            "nearest": fresh.nearest.tolist(),
            "templates": content[0],
            "last_template_id": content[1],
        }
        try:
            self._write_meta({"impostor_estimate": json.dumps(record)})
        except GalleryError as exc:
            self._note(f"{self.path}: the impostor estimate was not stored ({exc})")
            return
        self._estimate = (self._generation(), fresh)

    def _sampled_estimate(self) -> ImpostorEstimate:
        names = sorted(self._names())
        if len(names) > SAMPLED_IDENTITIES:
            rng = np.random.default_rng(0)
            names = [names[i] for i in np.sort(rng.choice(len(names), SAMPLED_IDENTITIES, replace=False))]
        vecs, owners = self._labelled_vectors(names)
        best: dict[str, float] = {}
        for owner, cands in zip(owners, self.search(vecs, top_k=2), strict=True):
            other = next((c.score for c in cands if c.name != owner), None)
            if other is not None:
                best[owner] = max(best.get(owner, -1.0), other)
        return ImpostorEstimate(np.asarray(list(best.values()), dtype=np.float64))

    def stored_threshold(self) -> tuple[float, str] | None:
        """(threshold, where it came from) stored in the gallery (:meth:`set_threshold`), or None."""
        stored, source = self._meta("threshold"), self._meta("threshold_source")
        if stored is None:
            return None
        return float(stored), source or "stored in the gallery"  # e.g. "calibrate on pairs.txt"

    def set_threshold(self, value: float | None, source: str = "") -> None:
        """Store the gallery's cosine threshold (None clears it), with where it came from."""
        check_threshold(value)
        self._check_writable()
        self._write_meta({
            "threshold": None if value is None else repr(float(value)),
            "threshold_source": source if value is not None else None,
        })  # fmt: skip

    def resolve_threshold(self, threshold: float | None) -> float:
        """``threshold`` if given (checked: a finite cosine), else the gallery's (:meth:`threshold_info`)."""
        return self.threshold_info(threshold).threshold

    # ---- writes ----------------------------------------------------------------------------------
    def enroll(
        self,
        name: str,
        embeddings: np.ndarray,
        *,
        new: bool = False,
        add: bool = False,
        image_sha256: str | None = None,
        source: str | None = None,
        detector: str | None = None,
        boxes: Sequence[Sequence[float]] | None = None,
        found_by: str | None = None,
    ) -> EnrollResult:
        """Add one or more templates (rows of ``embeddings``) for ``name``, creating it if new.

        ``new=True`` refuses a name that is already enrolled (a second person typed under the same
        name would otherwise merge into it); ``add=True`` refuses a name that is not (a typo would
        otherwise create a person). Either refusal is a :class:`GalleryParameterError`, decided in
        the same transaction as the write. The result tells whether the name was ``created``, how
        many ``templates`` it has now, and which other identities a new template is near-identical
        to (``look_alikes``).

        All rows are committed together. With ``image_sha256``, enrolling the same image for the same
        name again adds nothing (``duplicate=True``), so re-running an interrupted batch is safe.
        ``source``, ``detector``, ``boxes`` and ``found_by`` (how the face was found: ``detector``,
        ``padded`` or ``whole``) are kept with each template for ``gallery show``.
        """
        name = self.check_enroll(name, new=new, add=add)
        self._check_writable()
        vecs = unit_rows(embeddings, self._bound_dim())
        if boxes is not None and len(boxes) != len(vecs):
            raise UsageError("one box per embedding")
        box = [None] * len(vecs) if boxes is None else [box_text(b) for b in boxes]
        rows = [TemplateRow(v, image_sha256, source, detector, box[i], found_by) for i, v in enumerate(vecs)]
        result = self._enroll(name, rows, new, add)
        if result.template_ids:
            self._renew_estimate()
        return result

    def check_enroll(self, name: str, *, new: bool = False, add: bool = False) -> str:
        """Raise what :meth:`enroll` would for ``name`` with ``new``/``add``, before any photo is read
        (enroll checks again as it writes). Returns the normalised name."""
        if new and add:
            raise ParameterError("{new} and {add} exclude each other", new=True, add=True)
        name = check_name(name)
        self._check_open()
        if new or add:
            check_expected(name, self._template_count(name), new, add)
        return name

    def _look_alikes(self, vecs: np.ndarray, name: str) -> tuple[Candidate, ...]:
        """Identities other than ``name`` with a template above :data:`LOOK_ALIKE` cosine to a row of
        ``vecs``, best first (asking for more candidates while the last one is still that close)."""
        best: dict[str, float] = {}
        todo, k = np.arange(len(vecs)), 4
        while len(todo):
            deeper = []
            for qi, cands in zip(todo, self.search(vecs[todo], top_k=k), strict=True):
                for cand in cands:
                    if cand.name != name and cand.score > LOOK_ALIKE:
                        best[cand.name] = max(cand.score, best.get(cand.name, -1.0))
                if len(cands) == k and cands[-1].score > LOOK_ALIKE:
                    deeper.append(qi)
            todo, k = np.asarray(deeper, dtype=np.int64), k * 4
        return tuple(Candidate(n, s) for n, s in sorted(best.items(), key=lambda kv: -kv[1]))

    def enroll_many(self, names: Sequence[str], embeddings: np.ndarray) -> int:
        """Bulk import: one template per row of ``embeddings`` for the matching name, in ONE transaction.

        For importing existing embeddings (or building a benchmark gallery) where one commit per person
        would dominate. All or nothing; returns the number of templates added.
        """
        checked = [check_name(n) for n in names]
        self._check_writable()
        vecs = unit_rows(embeddings, self._bound_dim())
        if len(checked) != len(vecs):
            raise UsageError(f"{len(checked)} names for {len(vecs)} embeddings")
        added = self._enroll_many(checked, vecs)
        self._renew_estimate()
        return added

    def remove(self, name: str) -> int:
        """Remove ``name`` and all its templates; returns how many templates went."""
        name = check_name(name)
        self._check_writable()
        removed = self._remove(name)
        self._renew_estimate()
        return removed

    def rename(self, old: str, new: str) -> None:
        """Rename identity ``old`` to ``new`` (which must not exist); templates are kept."""
        old, new = check_name(old), check_name(new)
        self._check_writable()
        self._rename(old, new)

    def _already_enrolled(self, name: str) -> GalleryError:
        return GalleryError(f"{name!r} is already enrolled; remove it first or pick another name")

    # ---- reads -----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._check_open()
        return self._names()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self._template_count(check_name(name)) is not None

    def __len__(self) -> int:
        return self._counts()[0]

    def show(self, name: str) -> IdentityInfo:
        self._check_open()
        info = self._show(check_name(name))
        if info is None:
            raise self._not_enrolled(name)
        return info

    def image_hashes(self) -> set[tuple[str, str]]:
        """(name, SHA-256 of the photo) of every template enrolled from a photo: lets a bulk
        enrollment skip the photos it already did without reading them again."""
        self._check_open()
        return self._image_hashes()

    def template_counts(self) -> dict[str, int]:
        """Every enrolled name with its number of templates, by name."""
        self._check_open()
        return self._template_counts()

    def verify(self, name: str, embedding: np.ndarray) -> float:
        """Cosine similarity between ``embedding`` and ``name``'s best template (exact, from storage)."""
        self._check_open()
        name = check_name(name)
        query = unit_rows(embedding, self.dim)
        if len(query) != 1:
            raise UsageError("verify takes one embedding")
        vecs = self._identity_vectors(name)
        if vecs is None:
            raise self._not_enrolled(name)
        return float(np.max(_unit(vecs) @ query[0]))

    def search(self, embeddings: np.ndarray, top_k: int = 5) -> list[list[Candidate]]:
        """Top ``top_k`` names per query row, each scored by its best template (an exact cosine), best
        first."""
        self._check_open()
        check_top_k(top_k)
        return self._search(unit_rows(embeddings, self.dim), top_k)

    def identify(self, embeddings: np.ndarray, top_k: int = 5, threshold: float | None = None) -> list[Match]:
        """Per query row: the best name if it scores at least ``threshold`` (else None) and the candidates."""
        info = self.threshold_info(threshold)
        thr = info.threshold
        out = []
        for cands in self.search(embeddings, top_k):
            if cands and cands[0].score >= thr:
                out.append(Match(cands[0].name, cands[0].score, tuple(cands), thr, info.source))
            else:
                out.append(Match(None, cands[0].score if cands else None, tuple(cands), thr, info.source))
        return out

    def stats(self) -> dict[str, object]:
        """Counts, model, threshold and the backend's layout, for ``facestyle gallery stats``."""
        self._check_open()
        n_id, n_t = self._counts()
        try:
            info = self.threshold_info()
        except UsageError:
            info = None
        dim = self._meta("dim")
        return {
            "path": str(self.path),
            "backend": self.backend,
            "identities": n_id,
            "templates": n_t,
            "model": self._meta("model"),
            "model_version": self._meta("model_version"),
            "dim": None if dim is None else int(dim),
            "threshold": None if info is None else info.threshold,
            "threshold_source": None if info is None else info.source,
            "generation": self._generation(),
            **self._layout(),
        }

    # ---- copying between galleries ----------------------------------------------------------------
    def export_records(self) -> tuple[list[IdentityRecord], list[TemplateRecord]]:
        """Every identity and template with its metadata and vector (for ``gallery migrate``)."""
        self._check_open()
        return self._export()

    def import_records(
        self, identities: Sequence[IdentityRecord], templates: Sequence[TemplateRecord]
    ) -> int:
        """Add ``identities`` and ``templates`` (from :meth:`export_records` of a gallery of the same
        model) in one transaction, keeping names, times and metadata. A template whose name already
        has one with the same vector is skipped, so copying twice adds nothing. Returns how many
        templates were added."""
        self._check_writable()
        dim = self._bound_dim()
        for t in templates:
            if t.vector.shape != (dim,):
                raise GalleryError(
                    f"a template of {t.name!r} has {t.vector.size} dimensions; {self.path} holds {dim}"
                )
        added = self._import(list(identities), list(templates))
        self._renew_estimate()
        return added

    # ---- what a backend provides ----------------------------------------------------------------
    @classmethod
    def accepts(cls, location: Location) -> bool:
        """Whether this backend stores galleries at ``location``."""
        raise NotImplementedError

    @classmethod
    def exists(cls, location: Location) -> bool:
        """Whether a gallery exists at ``location`` (cheap: no index, no model)."""
        raise NotImplementedError

    @classmethod
    def stored_model(cls, location: Location) -> str | None:
        """The model the gallery at ``location`` is bound to (None: no gallery, or not bound)."""
        raise NotImplementedError

    def _attach(self, create: bool) -> None:
        """Open the storage (with ``create``, make it); raise :class:`GalleryError` if impossible."""
        raise NotImplementedError

    def _opened(self) -> None:
        """Called once the model is bound: catch up with the storage (a cache, an index)."""

    def _release(self) -> None:
        """Let go of the storage (connections, file handles). Safe to call after a failed attach."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make everything durable that is not yet (the directory backend's index file)."""
        raise NotImplementedError

    def rebuild(self) -> int:
        """Rebuild the search index from the stored templates; returns the number indexed."""
        raise NotImplementedError

    def _meta(self, key: str) -> str | None:
        raise NotImplementedError

    def _write_meta(self, values: dict[str, str | None], if_absent: str | None = None) -> None:
        """Set (None: delete) ``values`` in one write; with ``if_absent``, only if that key has no value
        when the write runs (decided atomically)."""
        raise NotImplementedError

    def _bind_storage(self, model: str, dim: int, version: str | None) -> None:
        """Bind the gallery to ``model`` unless another process bound it first."""
        self._write_meta({"model": model, "dim": str(int(dim)), "model_version": version}, if_absent="model")

    def _generation(self) -> int:
        """A counter every committed write increases: what cached answers are keyed by."""
        raise NotImplementedError

    def _counts(self) -> tuple[int, int]:
        """(identities, templates)."""
        raise NotImplementedError

    def _last_template_id(self) -> int:
        """The highest template id ever given (ids are never reused; 0 for none): with the count, it
        tells how many templates were enrolled and removed since the impostor estimate was stored."""
        raise NotImplementedError

    def _template_count(self, name: str) -> int | None:
        """How many templates ``name`` has; None when it is not enrolled."""
        raise NotImplementedError

    def _names(self) -> list[str]:
        raise NotImplementedError

    def _show(self, name: str) -> IdentityInfo | None:
        raise NotImplementedError

    def _image_hashes(self) -> set[tuple[str, str]]:
        raise NotImplementedError

    def _template_counts(self) -> dict[str, int]:
        raise NotImplementedError

    def _identity_vectors(self, name: str) -> np.ndarray | None:
        """The stored vectors of ``name`` ((n, dim)), None when it is not enrolled."""
        raise NotImplementedError

    def _labelled_vectors(self, names: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        """(vectors, owner name per vector) of every template of ``names`` (None: of everyone)."""
        raise NotImplementedError

    def _search(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
        """:meth:`search` on checked unit rows; scores must be exact cosines."""
        raise NotImplementedError

    def _enroll(self, name: str, rows: list[TemplateRow], new: bool, add: bool) -> EnrollResult:
        """One transaction: :func:`check_expected`, the duplicate-photo check, the inserts."""
        raise NotImplementedError

    def _enroll_many(self, names: list[str], vecs: np.ndarray) -> int:
        raise NotImplementedError

    def _remove(self, name: str) -> int:
        raise NotImplementedError

    def _rename(self, old: str, new: str) -> None:
        raise NotImplementedError

    def _layout(self) -> dict[str, object]:
        """The backend's own lines of :meth:`stats` (index, files, schema, ...)."""
        raise NotImplementedError

    def _export(self) -> tuple[list[IdentityRecord], list[TemplateRecord]]:
        raise NotImplementedError

    def _import(self, identities: list[IdentityRecord], templates: list[TemplateRecord]) -> int:
        raise NotImplementedError


@dataclass(slots=True)
class TemplateRow:
    """One template to store: its unit vector and what is known about where it came from."""

    vector: np.ndarray
    image_sha256: str | None = None
    source: str | None = None
    detector: str | None = None
    box: str | None = None
    found_by: str | None = None


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """An identity as copied between galleries."""

    name: str
    created_at: float
    updated_at: float


@dataclass(slots=True, kw_only=True)
class TemplateRecord(TemplateRow):
    """A template as copied between galleries: whose it is and when it was enrolled, too."""

    name: str
    created_at: float


def records(
    identities: Sequence[tuple], templates: Sequence[tuple]
) -> tuple[list[IdentityRecord], list[TemplateRecord]]:
    """Records from a backend's export rows: identities ``(name, created, updated)``, templates
    ``(name, created, vector, image_sha256, source, detector, box, found_by)``."""
    return (
        [IdentityRecord(str(n), float(c), float(u)) for n, c, u in identities],
        [
            TemplateRecord(np.asarray(t[2], np.float32), *t[3:], name=t[0], created_at=float(t[1]))
            for t in templates
        ],
    )


def _unit(vecs: np.ndarray) -> np.ndarray:
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


def _from_pipeline(
    pipeline: PhotoPipeline,
    model: str | None,
    dim: int | None,
    version: str | None,
    default_threshold: float | None,
) -> tuple[str, int, str | None, float | None]:
    """(model, dim, version, default threshold) of ``pipeline``'s embedder; explicit values must agree."""
    emb = pipeline.embedder
    version_of = getattr(emb, "version", "") or None
    have = {"model": emb.name, "dim": int(emb.embedding_size), "model_version": version_of}
    for param, given in (("model", model), ("dim", dim), ("model_version", version)):
        if given is not None and given != have[param]:
            raise ParameterError(
                f"{{{param}}} conflicts with the pipeline, whose embedder has {param} "
                f"{literal(repr(have[param]))}; give the pipeline alone",
                **{param: given},
            )
    if default_threshold is None and getattr(emb, "score_kind", "cosine") == "cosine":
        # a Siamese checkpoint's threshold is a probability: meaningless for the gallery's cosines
        default_threshold = emb.default_threshold
    return have["model"], have["dim"], have["model_version"], default_threshold
