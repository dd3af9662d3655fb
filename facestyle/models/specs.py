"""What the registry knows about a pretrained model: its files and everything needed to use it.

Modelled on torchvision's weights enums: one declarative :class:`ModelSpec` per model carries its
source, checksum, licence, sizes, preprocessing (chip template, input normalisation), the activation
taps it offers, its default threshold and the function that builds it. The entries themselves are in
:mod:`facestyle.models.registry`; this module is only the vocabulary, and imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

#: What a model is for. One model may serve more than one role: an embedder with ``taps`` is also a
#: feature backbone (``dlib-resnet-v1`` drives style transfer and the grid head).
Kind = Literal["embedder", "detector", "backbone", "landmarks"]


@dataclass(frozen=True)
class WeightFile:
    """One file of weights.

    Exactly one of ``package`` (a pip package that ships the file, located without importing it) or
    ``url`` (a public download, read from the cache or put there by ``facestyle models import``) is set.
    ``sha256`` is the full hex digest; where the publisher only gives a prefix (torchvision puts the
    first 8 hex digits in the file name) ``sha256`` holds that prefix and is checked as one.
    """

    filename: str
    sha256: str
    package: str | None = None
    package_path: str | None = None
    url: str | None = None
    size_bytes: int | None = None

    @property
    def source(self) -> str:
        """Where the file comes from, for listings: ``pip:<package>`` or the download URL."""
        return f"pip:{self.package.replace('_', '-')}" if self.package else str(self.url)


#: ``builder(spec, device=None, **options)``: the model's object (see :attr:`ModelSpec.build`).
Builder = Callable[..., Any]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the toolkit knows about one pretrained model.

    ``build`` makes the object of the model's ``kind``: an embedder's raw network (``nn.Module``, pixels
    0..255 in, vector out), a detector (:class:`~facestyle.detect.faces.Detector`), or a backbone's
    :class:`~facestyle.models.extractor.FeatureExtractor`. ``build_extractor`` (backbones, and
    embedders that offer ``taps``) makes a tapped feature extractor: ``(spec, taps, device=None)``.
    Call them through :mod:`facestyle.models.registry`, which finds the spec by name.
    """

    name: str
    kind: Kind
    description: str
    licence: str
    files: tuple[WeightFile, ...] = ()
    build: Builder | None = field(default=None, repr=False, compare=False)
    build_extractor: Builder | None = field(default=None, repr=False, compare=False)
    input_size: int | None = None
    embedding_size: int | None = None
    #: Embedders: where the five landmarks go in the chip (pixels; :mod:`facestyle.align.templates`).
    template: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: Backbones: per-channel mean and std of RGB in [0, 1] that the network expects.
    normalize: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    #: Named activations a feature extractor can return, shallow to deep.
    taps: tuple[str, ...] = ()
    #: Default taps for style transfer (Gram matrices) and content, when the model can drive it.
    style_taps: tuple[str, ...] = ()
    content_taps: tuple[str, ...] = ()
    #: Per-layer weights of ``style_taps`` (lambda_l, one per tap; empty: equal), used when a run keeps
    #: the default taps.
    style_weights: tuple[float, ...] = ()
    #: Classification on whole images: pooled activations of ``feature_tap`` at ``feature_size`` px.
    feature_tap: str | None = None
    feature_size: int | None = None
    #: Cosine-similarity threshold for "same person", with where it was measured. Embedders only.
    default_threshold: float | None = None
    threshold_source: str = ""
    #: False for random weights: every result built on such a model says it is untrained.
    trained: bool = True
    #: A model that needs a file the user trains (e.g. the grid head): ``weights=`` names it.
    user_weights: str = ""
    notes: str = ""

    @property
    def bundled(self) -> bool:
        """True when every file ships inside an installed package (no download ever needed)."""
        return all(f.package for f in self.files)

    @property
    def roles(self) -> tuple[str, ...]:
        """What the model can be used as: its kind, plus ``backbone`` when it offers taps."""
        extra = ("backbone",) if self.build_extractor is not None and self.kind != "backbone" else ()
        return (self.kind, *extra)
