"""Image decoding: bytes on disk -> the RGB picture a viewer shows, refusing what is broken or dangerous."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from sgeo.errors import SgeoError, one_line

# PIL's own default limit (about 89.5 MP, a 0.25 GB RGB buffer); beyond it PIL only warns.
DEFAULT_MAX_PIXELS = 89_478_485
# No image file is bigger (an uncompressed 89.5 MP RGB TIFF is 268 MB); /dev/zero is.
DEFAULT_MAX_BYTES = 512 << 20
# Beyond this the picture is a strip, not a scene; and padding a 20000x1 strip to a square costs gigabytes.
MAX_ASPECT = 25
DECODE_SECONDS = 60  # one pathological file must not hold a job: its decode is cut off and recorded

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# JPEG's decoder can scale by 1/2, 1/4 or 1/8 while decoding (PIL's `draft`), at a fraction of the memory
_JPEG_SCALES = (2, 4, 8)


class ImageDecodeError(SgeoError):
    """The bytes are not a complete, decodable image of acceptable size."""


class PathEscapeError(SgeoError):
    """A dataset path points outside the dataset's folder."""


def resolve_inside(root: str | Path, rel: str | Path) -> Path:
    """Join `rel` to `root` and resolve symlinks and `..`; refuse a result outside `root`."""
    base = Path(root).resolve()
    try:
        # an absolute `rel` replaces `base` in the join, and is then judged like any other path
        target = (base / rel).resolve()
    except (ValueError, OSError) as e:
        raise PathEscapeError(f"invalid image path {str(rel)!r}: {e}") from e
    if not target.is_relative_to(base):
        raise PathEscapeError(
            f"image path {str(rel)!r} resolves to {target}, outside the dataset root {base}; "
            "fix the dataset entry or move the file inside the root"
        )
    return target


def content_hash(data: bytes) -> str:
    """sha256 hex digest of the raw file bytes."""
    return hashlib.sha256(data).hexdigest()


_truncation_lock = threading.Lock()
_truncation_depth = 0
_truncation_saved = False


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Turn off PIL's global LOAD_TRUNCATED_IMAGES while decoding, so a cut-off file always raises.

    The flag is process-global and other libraries set it; a depth count makes nested or concurrent
    decodes restore the caller's value exactly once, when the last of them finishes.
    """
    global _truncation_depth, _truncation_saved
    with _truncation_lock:
        if _truncation_depth == 0:
            _truncation_saved = ImageFile.LOAD_TRUNCATED_IMAGES
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _truncation_depth += 1
    try:
        yield
    finally:
        with _truncation_lock:
            _truncation_depth -= 1
            if _truncation_depth == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = _truncation_saved


class _DecodeTimeout(Exception):
    pass


@contextmanager
def _time_box(seconds: float) -> Iterator[None]:
    """Cut off a decode that runs longer than `seconds` (main thread only: SIGALRM; elsewhere no limit)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(*_):
        raise _DecodeTimeout

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _DecodeTimeout:
        raise ImageDecodeError(f"decoding took longer than {seconds:g} s; the file is pathological") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_file(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, name: str | None = None) -> bytes:
    """The bytes of a regular file of at most `max_bytes`; a fifo, a device or a directory is refused
    without being read (a fifo would block forever, /dev/zero never ends). `name` is how errors call it.

    The file is opened without blocking and judged by what was opened (fstat), so a path swapped for a fifo
    between a check and the open cannot hang the caller."""
    name = name or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageDecodeError(f"no such file: {name}") from None
    except IsADirectoryError:
        raise ImageDecodeError(f"is a directory, not an image: {name}") from None
    except OSError as e:
        raise ImageDecodeError(f"cannot read {name}: {one_line(e)}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageDecodeError(f"is a directory, not an image: {name}")
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(f"is not a regular file (a pipe, socket or device), not an image: {name}")
        if info.st_size > max_bytes:
            raise ImageDecodeError(
                f"{name} is {info.st_size} bytes, over the {max_bytes >> 20} MB limit for an image"
            )
        with open(fd, "rb", closefd=False) as handle:
            return handle.read(max_bytes + 1)[:max_bytes]
    except OSError as e:
        raise ImageDecodeError(f"cannot read {name}: {one_line(e)}") from None
    finally:
        os.close(fd)


def decoded_bytes(im: Image.Image) -> int:
    """Bytes PIL's buffer of `im` takes once decoded (its mode's bytes per pixel, from the header alone)."""
    width, height = im.size
    # PIL keeps every multi-band and 32-bit mode in 4 bytes a pixel (RGB too), 16-bit gray in 2, the rest in 1
    per_pixel = 2 if im.mode.startswith("I;16") else 1 if im.mode in ("1", "L", "P") else 4
    return width * height * per_pixel


def _fit_decoded_size(im: Image.Image, max_decoded_bytes: int) -> None:
    """Make the decode of `im` cost at most `max_decoded_bytes`: a JPEG is decoded at 1/2, 1/4 or 1/8 scale
    (the smallest reduction that fits); any other format over the budget is refused before its pixels are read."""
    size = decoded_bytes(im)
    if size <= max_decoded_bytes:
        return
    width, height = im.size
    if im.format == "JPEG":
        for scale in _JPEG_SCALES:
            if size <= max_decoded_bytes * scale * scale:
                # draft picks the largest reduction whose result is at least the size asked for
                im.draft(im.mode, (-(-width // scale), -(-height // scale)))
                if decoded_bytes(im) <= max_decoded_bytes:
                    return
    raise ImageDecodeError(
        f"image is {width}x{height} {im.mode}, {size / 2**20:.0f} MB once decoded, over the limit of "
        f"{max_decoded_bytes / 2**20:.0f} MB for one image; send a smaller image (or a JPEG, which is reduced "
        "while decoding)"
    )


def _open_checked(data: bytes, max_pixels: int, max_decoded_bytes: int | None = None) -> Image.Image:
    """Parse the header, check the pixel count (and the decoded size), then decode every pixel."""
    with warnings.catch_warnings():
        # we apply our own limit below; PIL's warning would only be noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageDecodeError(f"image is too large to decode safely: {one_line(e)}") from e
        except UnidentifiedImageError as e:
            raise ImageDecodeError("not an image: the bytes are in no format PIL can read") from e
        except Exception as e:  # corrupt headers raise anything from SyntaxError to struct.error
            raise ImageDecodeError(f"corrupt image header: {one_line(e)}") from e
    width, height = im.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(a decompression bomb?); if the image is genuine, downscale it first"
        )
    if width == 0 or height == 0:
        raise ImageDecodeError(f"image has an empty size {width}x{height}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageDecodeError(
            f"image is {width}x{height}, an aspect ratio over {MAX_ASPECT}:1; crop it to the scene it shows"
        )
    if max_decoded_bytes is not None:
        _fit_decoded_size(im, max_decoded_bytes)
    try:
        with _strict_truncation(), _time_box(DECODE_SECONDS):
            im.load()
    except ImageDecodeError:
        raise
    except Exception as e:
        raise ImageDecodeError(f"truncated or corrupt {im.format} image: {one_line(e)}") from e
    return im


def _exif_upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block: viewers ignore it and so do we
        return im


_BAND_ROWS = 256  # rows converted at a time: temporaries stay a band, not a whole high-depth image


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale high bit-depth grayscale to 0..255 (scaling, not clipping: 65535 -> 255).

    Converted a band of rows at a time, 16-bit data in integers: whole-image float64 temporaries made a
    9459x9459 16-bit PNG cost 2.3 GB."""
    a = np.asarray(im)
    if im.mode.startswith("I;16") or (im.mode == "I" and a.min() >= 0 and a.max() <= 65535):
        # PIL decodes 16-bit PNGs as "I" in some versions; 8-bit values in an "I" image are kept as they are
        divisor = 257 if im.mode.startswith("I;16") or a.max() > 255 else 1
        # (v + 128) // 257 == rint(v / 257) for v >= 0: 257 is odd, so v / 257 is never halfway
        scale = lambda band: (band.astype(np.uint32) + divisor // 2) // divisor  # noqa: E731
    elif im.mode == "F" and np.nanmin(a) >= 0.0 and np.nanmax(a) <= 1.0:
        scale = lambda band: np.rint(np.nan_to_num(band.astype(np.float64) * 255.0))  # noqa: E731
    else:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        factor = 255.0 / (hi - lo) if hi > lo else 0.0
        scale = lambda band: np.rint(np.nan_to_num((band.astype(np.float64) - lo) * factor))  # noqa: E731
    out = np.empty(a.shape, dtype=np.uint8)
    for row in range(0, a.shape[0], _BAND_ROWS):
        out[row : row + _BAND_ROWS] = np.clip(scale(a[row : row + _BAND_ROWS]), 0, 255)
    return Image.fromarray(out, mode="L")


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # an unusable profile: fall back to PIL's plain formula
    return im.convert("RGB")


def _over_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _HIGH_DEPTH_MODES:
        im = _to_8bit(im)
    if im.mode == "CMYK":
        return _cmyk_to_rgb(im)
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        return _over_white(im.convert("RGBA"))
    return im if im.mode == "RGB" else im.convert("RGB")


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_decoded_bytes: int | None = None
) -> Image.Image:
    """Decode image bytes to an upright mode-"RGB" image, exactly as a viewer would show it.

    EXIF orientation is applied, alpha is composited over white, 16-bit data is scaled to 8 bits.
    Raises ImageDecodeError for empty, non-image, truncated or corrupt data and for images whose
    header declares more than `max_pixels` pixels (checked before any pixel is decoded).
    `max_decoded_bytes` (a server's per-request budget; None: no budget) bounds PIL's decoded buffer: a
    JPEG over it is decoded at a reduced scale, any other image over it is refused before decoding.
    """
    if not data:
        raise ImageDecodeError("empty file: 0 bytes")
    im = _open_checked(data, max_pixels, max_decoded_bytes)
    try:
        rgb = _to_rgb(_exif_upright(im))
    except ImageDecodeError:
        raise
    except Exception as e:
        raise ImageDecodeError(f"cannot convert {im.mode} {im.format} image to RGB: {one_line(e)}") from e
    rgb.load()
    return rgb


def load_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, bytes]:
    """Read a regular file and decode it; returns (RGB image, raw bytes). Errors name the file."""
    data = read_file(path)
    try:
        return decode_image(data, max_pixels=max_pixels), data
    except ImageDecodeError as e:
        raise ImageDecodeError(f"{path}: {e}") from e
