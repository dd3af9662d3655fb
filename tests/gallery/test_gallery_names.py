"""Identity mix-ups: one name per person however it is typed (NFC), ``new``/``add`` as explicit
intents, the template count an enrollment reports, and the look-alike warning (cosine > 0.995 to
another identity's template). Vectors only: no model is loaded."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest

from facestyle.errors import GalleryError, GalleryParameterError, ParameterError
from facestyle.gallery import Gallery
from facestyle.gallery.gallery import LOOK_ALIKE

DIM = 16
CAFE_NFC = "caf\u00e9"  # é as one code point
CAFE_NFD = "cafe\u0301"  # e + combining acute


def _unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _near(v: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly ``cosine`` to unit row ``v``."""
    w = rng.standard_normal(DIM).astype(np.float64)
    w -= (w @ v[0]) * v[0]
    w /= np.linalg.norm(w)
    return (cosine * v[0] + np.sqrt(1 - cosine**2) * w)[None].astype(np.float32)


@pytest.fixture
def gallery(where: Path | str):
    with Gallery.open(where, model="test", dim=DIM) as g:
        yield g


def test_composed_and_decomposed_names_are_one_identity(gallery: Gallery) -> None:
    assert CAFE_NFC != CAFE_NFD and unicodedata.normalize("NFC", CAFE_NFD) == CAFE_NFC
    rng = np.random.default_rng(0)
    first = gallery.enroll(CAFE_NFC, _unit(rng))
    second = gallery.enroll(CAFE_NFD, _unit(rng))
    assert (first.created, first.templates) == (True, 1)
    assert (second.created, second.templates, second.name) == (False, 2, CAFE_NFC)
    assert gallery.template_counts() == {CAFE_NFC: 2}
    assert CAFE_NFD in gallery
    assert gallery.remove(CAFE_NFD) == 2 and len(gallery) == 0


def test_new_refuses_an_enrolled_name_and_adds_nothing(gallery: Gallery) -> None:
    rng = np.random.default_rng(1)
    gallery.enroll(CAFE_NFC, _unit(rng, 2))
    with pytest.raises(GalleryParameterError) as caught:
        gallery.enroll(CAFE_NFD, _unit(rng), new=True)
    assert str(caught.value) == "'café' is already enrolled (2 templates); new=True refuses an existing name"
    assert caught.value.exit_code == GalleryError.exit_code  # a gallery refusal, not a usage error
    assert gallery.template_counts() == {CAFE_NFC: 2}
    created = gallery.enroll("someone else", _unit(rng), new=True)
    assert created.created and created.templates == 1


def test_add_refuses_a_name_that_is_not_enrolled(gallery: Gallery) -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(GalleryParameterError, match=r"^'Alcie' is not enrolled; add=True only adds"):
        gallery.enroll("Alcie", _unit(rng), add=True)
    assert len(gallery) == 0
    gallery.enroll("Alice", _unit(rng))
    assert gallery.enroll("Alice", _unit(rng), add=True).templates == 2
    with pytest.raises(ParameterError, match="new=True and add=True exclude each other"):
        gallery.enroll("Alice", _unit(rng), new=True, add=True)


def test_check_enroll_tells_before_any_photo(gallery: Gallery) -> None:
    gallery.enroll("Bob", _unit(np.random.default_rng(3)))
    assert gallery.check_enroll(" Bob ", add=True) == "Bob"
    with pytest.raises(GalleryParameterError, match="already enrolled"):
        gallery.check_enroll("Bob", new=True)
    with pytest.raises(GalleryParameterError, match="not enrolled"):
        gallery.check_enroll("Rob", add=True)


@pytest.mark.parametrize(
    ("cosine", "warned"), [(1.0, True), (0.999, True), (LOOK_ALIKE - 0.002, False), (0.9, False)]
)
def test_look_alike_of_another_identity_is_named(gallery: Gallery, cosine: float, warned: bool) -> None:
    rng = np.random.default_rng(4)
    bob = _unit(rng)
    gallery.enroll("Bob", bob)
    gallery.enroll("Carol", _unit(rng))
    result = gallery.enroll("Robert", _near(bob, cosine, rng))
    if warned:
        assert [c.name for c in result.look_alikes] == ["Bob"]
        assert result.look_alikes[0].score == pytest.approx(cosine, abs=1e-5)
    else:
        assert result.look_alikes == ()
    assert gallery.template_counts()["Robert"] == 1  # a warning, not a refusal


def test_own_templates_are_not_look_alikes_even_when_many(gallery: Gallery) -> None:
    """The search looks past the name's own near-identical templates to another identity's."""
    rng = np.random.default_rng(5)
    base = _unit(rng)
    for _ in range(70):  # more than the first search's depth
        gallery.enroll("Dora", _near(base, 0.9999, rng))
    gallery.enroll("Eve", _near(base, 0.997, rng))
    again = gallery.enroll("Dora", base)
    assert [c.name for c in again.look_alikes] == ["Eve"]
    assert gallery.enroll("Dora", _unit(rng)).look_alikes == ()
