"""Property tests (Hypothesis): whatever bytes, images, arrays or names come in, the loader and the
gallery answer with a result or a :class:`FacestyleError`, never another exception.

Each property also checks the result it gets: a loaded image is (H, W, 3) uint8 of the file's size,
an enrolled name is found again under its NFC form and removed cleanly. The example counts are kept
small enough for `make test` (about 20 s in all); run with ``--hypothesis-seed`` to replay a failure.
"""

from __future__ import annotations

import io
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from facestyle.errors import FacestyleError
from facestyle.gallery import Gallery
from facestyle.io.images import as_rgb, load_image

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

#: Every PIL mode a user's file can decode to, and the formats that can hold each.
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "F"]
FORMATS = ["PNG", "JPEG", "TIFF", "GIF", "WEBP", "BMP", "PPM", "ICO", "TGA"]
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP", b"BM",
         b"P6\n", b"II*\x00", b"MM\x00*", b"\x00\x00\x01\x00"]  # fmt: skip


def _write(data: bytes) -> Path:
    with tempfile.NamedTemporaryFile(suffix=".img", delete=False) as handle:
        handle.write(data)
    return Path(handle.name)


def _load(data: bytes) -> np.ndarray | FacestyleError:
    path = _write(data)
    try:
        return load_image(path)
    except FacestyleError as exc:
        return exc
    finally:
        path.unlink()


def _check_loaded(result: np.ndarray | FacestyleError, size: tuple[int, int] | None = None) -> None:
    if isinstance(result, FacestyleError):
        assert str(result) and "\n" not in str(result)  # one line
        return
    assert result.dtype == np.uint8 and result.ndim == 3 and result.shape[2] == 3
    assert result.flags.c_contiguous
    if size is not None:
        assert result.shape[:2] == (size[1], size[0])


# ---- the loader -------------------------------------------------------------------------------------
@SETTINGS
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=2048))
def test_random_bytes_load_or_fail_cleanly(magic: bytes, body: bytes) -> None:
    _check_loaded(_load(magic + body))


@st.composite
def encoded_images(draw: st.DrawFn) -> tuple[bytes, tuple[int, int]]:
    """A real image of a random mode and size in a random format (combinations PIL cannot write are
    assumed away)."""
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 96)), draw(st.integers(1, 96)))
    fmt = draw(st.sampled_from(FORMATS))
    seed = draw(st.integers(0, 2**32 - 1))
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)  # 16-bit grey
    else:
        img = Image.fromarray(pixels, "RGBA").convert(mode)
    buf = io.BytesIO()
    try:
        img.save(buf, fmt)
    except (OSError, ValueError, KeyError, TypeError):
        assume(False)
    return buf.getvalue(), size


@SETTINGS
@given(image=encoded_images(), cut=st.floats(0.0, 1.0))
def test_random_valid_images_load_at_their_size(image: tuple[bytes, tuple[int, int]], cut: float) -> None:
    data, size = image
    with Image.open(io.BytesIO(data)) as probe:
        stored = probe.size  # ICO and some formats store a resized copy
    _check_loaded(_load(data), stored)
    # the same file cut short: an image or one clean error, never a crash
    _check_loaded(_load(data[: int(len(data) * cut)]))
    assert size[0] >= 1


@SETTINGS
@given(
    shape=st.lists(st.integers(0, 8), min_size=0, max_size=4),
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_, object]),
    fill=st.sampled_from([0, 1, 255, -1, 1e9, np.nan, np.inf]),
)
def test_random_arrays_are_an_image_or_a_clean_error(shape: list[int], dtype, fill) -> None:
    try:
        arr = np.full(shape, fill, dtype=dtype)
    except (ValueError, OverflowError, TypeError):
        assume(False)
    try:
        rgb, label = as_rgb(arr)
    except FacestyleError:
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and label == "image"


# ---- the gallery ------------------------------------------------------------------------------------
DIM = 8


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory):
    with Gallery.open(tmp_path_factory.mktemp("prop") / "g", model="test", dim=DIM) as g:
        yield g


@SETTINGS
@given(
    # every code point, lone surrogates included (they cannot be stored as UTF-8)
    name=st.text(st.characters(exclude_categories=()), max_size=300),
    seed=st.integers(0, 2**16),
)
def test_random_names_enroll_and_remove_or_fail_cleanly(gallery: Gallery, name: str, seed: int) -> None:
    vec = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    before = gallery.template_counts()
    try:
        result = gallery.enroll(name, vec)
    except FacestyleError as exc:
        assert str(exc) and gallery.template_counts() == before  # refused: nothing written
        return
    stored = unicodedata.normalize("NFC", name).strip()
    assert result.name == stored and stored in gallery and name in gallery
    assert gallery.show(name).name == stored
    assert [c.name for c in gallery.search(vec, top_k=1)[0]][0] in {stored, *before}
    assert gallery.remove(stored) == before.get(stored, 0) + 1
    assert gallery.template_counts() == {k: v for k, v in before.items() if k != stored}


@SETTINGS
@given(
    rows=st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=3 * DIM),
        st.lists(st.lists(st.floats(width=32), min_size=0, max_size=DIM + 1), max_size=3),
        st.text(max_size=5),
        st.none(),
    )
)
def test_random_embeddings_enroll_or_fail_cleanly(gallery: Gallery, rows) -> None:
    before = gallery.template_counts()
    try:
        gallery.enroll("vectors", rows)
    except FacestyleError:
        assert gallery.template_counts() == before
        return
    assert gallery.template_counts()["vectors"] == before.get("vectors", 0) + np.atleast_2d(rows).shape[0]
    gallery.remove("vectors")
