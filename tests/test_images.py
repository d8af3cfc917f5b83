"""Image decoding and path safety on real files written by PIL."""

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from sgeo.errors import SgeoError
from sgeo.pipeline.images import (
    ImageDecodeError,
    PathEscapeError,
    content_hash,
    decode_image,
    load_image,
    resolve_inside,
)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _px(im: Image.Image, xy) -> tuple[int, int, int]:
    return im.getpixel(xy)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but which carries almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def test_grayscale_becomes_equal_rgb_channels():
    im = Image.new("L", (4, 3), 77)
    out = decode_image(_encode(im, "PNG"))
    assert out.mode == "RGB" and out.size == (4, 3)
    assert _px(out, (2, 1)) == (77, 77, 77)


def test_cmyk_jpeg_is_converted_to_rgb():
    im = Image.new("CMYK", (32, 32), (255, 0, 0, 0))  # pure cyan ink
    out = decode_image(_encode(im, "JPEG", quality=95))
    assert out.mode == "RGB"
    r, g, b = _px(out, (16, 16))
    assert r < 15 and g > 240 and b > 240


def test_palette_transparency_is_composited_over_white():
    im = Image.new("P", (4, 1))
    im.putpalette([255, 0, 0, 0, 200, 0] + [0] * 762)
    im.putdata([0, 1, 0, 1])
    out = decode_image(_encode(im, "PNG", transparency=0))
    assert out.mode == "RGB"
    assert _px(out, (0, 0)) == (255, 255, 255)  # transparent red index -> white
    assert _px(out, (1, 0)) == (0, 200, 0)


def test_rgba_alpha_is_composited_over_white():
    im = Image.new("RGBA", (3, 1))
    im.putdata([(255, 0, 0, 0), (0, 0, 255, 128), (0, 255, 0, 255)])
    out = decode_image(_encode(im, "PNG"))
    assert _px(out, (0, 0)) == (255, 255, 255)
    r, g, b = _px(out, (1, 0))
    assert abs(r - 127) <= 1 and abs(g - 127) <= 1 and b == 255
    assert _px(out, (2, 0)) == (0, 255, 0)


def test_la_alpha_is_composited_over_white():
    im = Image.new("LA", (2, 1))
    im.putdata([(0, 0), (0, 255)])
    out = decode_image(_encode(im, "PNG"))
    assert _px(out, (0, 0)) == (255, 255, 255)
    assert _px(out, (1, 0)) == (0, 0, 0)


def test_16bit_png_is_scaled_not_clipped():
    a = np.array([[0, 1000, 257 * 100, 65535]], dtype=np.uint16)
    data = _encode(Image.fromarray(a), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = np.asarray(decode_image(data))
    assert out.dtype == np.uint8 and out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 4, 100, 255]  # clipping would give 255 for 1000


def test_webp_is_decoded():
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    a[:, 4:] = (10, 200, 30)
    out = decode_image(_encode(Image.fromarray(a), "WEBP", lossless=True))
    assert out.size == (8, 8)
    assert _px(out, (6, 3)) == (10, 200, 30) and _px(out, (1, 3)) == (0, 0, 0)


@pytest.mark.parametrize(("orientation", "red_corner"), [(6, "top_right"), (8, "bottom_left")])
def test_exif_orientation_is_applied(orientation, red_corner):
    a = np.zeros((40, 60, 3), dtype=np.uint8)  # stored 60 wide, 40 high
    a[:] = (0, 0, 255)
    a[:20, :30] = (255, 0, 0)  # stored top-left quadrant is red
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(_encode(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes()))
    assert out.size == (40, 60)  # width and height swapped, as a viewer shows it
    corners = {"top_left": (3, 3), "top_right": (36, 3), "bottom_left": (3, 56), "bottom_right": (36, 56)}
    for name, xy in corners.items():
        r, _, b = _px(out, xy)
        assert (r > 200 and b < 60) == (name == red_corner), (name, _px(out, xy))


def test_small_max_pixels_refuses_a_real_image():
    data = _encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="10000 pixels, over the limit of 5000"):
        decode_image(data, max_pixels=5000)
    assert decode_image(data, max_pixels=10_000).size == (100, 100)


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_decompression_bomb_header_is_refused_before_decoding(side):
    data = _png_header_only(side, side)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageDecodeError, match="too large|over the limit"):
            decode_image(data)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_truncated_jpeg_is_refused_even_if_pil_allows_truncation(monkeypatch):
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_truncated_png_is_refused():
    rng = np.random.default_rng(1)
    data = _encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) * 2 // 3])


def test_empty_text_and_missing_files_are_refused(tmp_path):
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "notes.png").write_text("this is not an image\n")
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_image(tmp_path / "notes.png")
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_image(tmp_path / "missing.png")
    assert issubclass(ImageDecodeError, SgeoError)


def test_load_image_returns_pixels_and_the_exact_bytes(tmp_path):
    data = _encode(Image.new("RGB", (5, 7), (1, 2, 3)), "PNG")
    (tmp_path / "x.png").write_bytes(data)
    im, raw = load_image(tmp_path / "x.png")
    assert raw == data and im.size == (5, 7) and _px(im, (0, 0)) == (1, 2, 3)
    assert content_hash(raw) == hashlib.sha256(data).hexdigest()


def test_error_messages_are_one_line(tmp_path):
    rng = np.random.default_rng(2)
    data = _encode(Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)), "JPEG")
    for bad in (b"", b"hello", data[:200], _png_header_only(100_000, 100_000)):
        with pytest.raises(ImageDecodeError) as e:
            decode_image(bad)
        assert "\n" not in str(e.value)


def test_resolve_inside_accepts_paths_inside_root(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.png").write_bytes(b"x")
    assert resolve_inside(tmp_path, "a/b/x.png") == (tmp_path / "a/b/x.png").resolve()
    assert resolve_inside(tmp_path, "a/../a/b/x.png") == (tmp_path / "a/b/x.png").resolve()
    assert resolve_inside(tmp_path, str(tmp_path / "a/b/x.png")) == (tmp_path / "a/b/x.png").resolve()
    os.symlink(tmp_path / "a" / "b" / "x.png", tmp_path / "link.png")
    assert resolve_inside(tmp_path, "link.png") == (tmp_path / "a/b/x.png").resolve()


def test_resolve_inside_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    with pytest.raises(PathEscapeError, match="outside the dataset root"):
        resolve_inside(root, "../secret.png")
    with pytest.raises(PathEscapeError):
        resolve_inside(root, str(outside))
    with pytest.raises(PathEscapeError):
        resolve_inside(root, Path("/etc/passwd"))
    os.symlink(outside, root / "innocent.png")
    with pytest.raises(PathEscapeError):
        resolve_inside(root, "innocent.png")
    os.symlink(tmp_path, root / "updir")
    with pytest.raises(PathEscapeError):
        resolve_inside(root, "updir/secret.png")
    assert issubclass(PathEscapeError, SgeoError)


def test_decoded_size_budget_reduces_a_jpeg_and_refuses_a_png():
    """A server's per-image budget: PIL's decoded buffer, judged from the header before any pixel is read."""
    rgb = np.random.default_rng(0).integers(0, 255, (800, 1200, 3), dtype=np.uint8)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG")
    Image.fromarray(rgb).save(png, format="PNG")
    full = 800 * 1200 * 4  # PIL holds RGB in 4 bytes a pixel
    assert decode_image(jpeg.getvalue(), max_decoded_bytes=full).size == (1200, 800)
    assert decode_image(jpeg.getvalue(), max_decoded_bytes=full // 4).size == (600, 400)  # 1/2 scale fits
    assert decode_image(jpeg.getvalue(), max_decoded_bytes=full // 5).size == (300, 200)  # 1/4 does
    assert decode_image(png.getvalue(), max_decoded_bytes=full).size == (1200, 800)
    with pytest.raises(ImageDecodeError, match="once decoded, over the limit"):
        decode_image(png.getvalue(), max_decoded_bytes=full - 1)
    with pytest.raises(ImageDecodeError, match="once decoded, over the limit"):
        decode_image(jpeg.getvalue(), max_decoded_bytes=full // 65)  # not even 1/8 fits
