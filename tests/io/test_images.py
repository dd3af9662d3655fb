"""load_image: every mode and orientation becomes upright RGB; bad files fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facestyle.errors import ImageError
from facestyle.io.images import load_image


def _gradient(w: int = 40, h: int = 20) -> Image.Image:
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    arr[..., 2] = 77
    return Image.fromarray(arr)


def test_exif_orientation_is_applied(tmp_path):
    img = _gradient()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)  # width and height swapped
    expected = np.asarray(img.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 3


def _pil_reference(path: Path) -> np.ndarray:
    """PIL's own RGB of a file, transparent parts composited onto white (the rule load_image promises)."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "1", "P+transparency"])
def test_modes_become_the_rgb_pil_makes_of_them(tmp_path, mode):
    img = _gradient()
    if mode in ("RGBA", "LA"):
        alpha = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (20, 1))  # transparent to opaque
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(alpha))
        img = img.convert(mode)
    elif mode == "P+transparency":
        img = img.convert("P")
        img.info["transparency"] = int(np.asarray(img)[0, 0])  # one palette entry is see-through
    else:
        img = img.convert(mode)
    path = tmp_path / ("img.tiff" if mode == "CMYK" else "img.png")
    img.save(path, transparency=img.info["transparency"]) if mode == "P+transparency" else img.save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 40, 3)
    np.testing.assert_array_equal(out, _pil_reference(path))
    if mode in ("RGBA", "LA", "P+transparency"):
        assert (out[0, 0] == 255).all()  # the fully transparent corner reads as white paper


def test_16_bit_grey_is_stretched_not_clipped(tmp_path):
    arr = np.arange(800, dtype=np.uint16).reshape(20, 40) * 80  # 0..63920
    path = tmp_path / "img.png"
    Image.fromarray(arr).save(path)
    out = load_image(path)
    assert out.shape == (20, 40, 3) and (out[..., 0] == out[..., 2]).all()
    expected = (arr.astype(np.float32) / arr.max() * 255.0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)


def test_alpha_composites_onto_white(tmp_path):
    arr = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    path = tmp_path / "clear.png"
    Image.fromarray(arr, "RGBA").save(path)
    assert (load_image(path) == 255).all()


def test_pgm_from_shared_data(att_dir):
    out = load_image(att_dir / "s1" / "1.pgm")
    assert out.shape == (112, 92, 3)
    assert 40 < out.mean() < 200


def test_non_image_and_missing_and_truncated(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png")
    good = tmp_path / "good.jpg"
    _gradient(200, 200).save(good, quality=90)
    data = good.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(cut)


def test_huge_image_refused_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(path)
    with pytest.raises(ImageError, match="more than the"):
        load_image(path, max_pixels=5_000_000)
    assert load_image(path, max_pixels=6_000_000).shape == (2000, 3000, 3)


def test_written_files_follow_the_umask_and_caches_of_faces_are_owner_only(tmp_path) -> None:
    import os

    from facestyle.io.files import atomic_write
    from facestyle.io.images import save_image

    old = os.umask(0o022)
    try:
        out = save_image(tmp_path / "out.png", np.zeros((4, 4, 3), np.uint8))
        assert out.stat().st_mode & 0o777 == 0o644
        secret = atomic_write(tmp_path / "emb.bin", lambda tmp: Path(tmp).write_bytes(b"x"), mode=0o600)
        assert secret.stat().st_mode & 0o777 == 0o600
        os.umask(0o077)
        private = save_image(tmp_path / "private.png", np.zeros((4, 4, 3), np.uint8))
        assert private.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left"
