"""Image decoding: bytes on disk -> the RGB picture a viewer shows, refusing what is broken or dangerous."""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from sgeo.errors import SgeoError

# PIL's own default limit (about 89.5 MP, a 0.25 GB RGB buffer); beyond it PIL only warns.
DEFAULT_MAX_PIXELS = 89_478_485

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


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


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header, check the pixel count, then decode every pixel."""
    with warnings.catch_warnings():
        # we apply our own limit below; PIL's warning would only be noise
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageDecodeError(f"image is too large to decode safely: {_one_line(e)}") from e
        except UnidentifiedImageError as e:
            raise ImageDecodeError("not an image: the bytes are in no format PIL can read") from e
        except Exception as e:  # corrupt headers raise anything from SyntaxError to struct.error
            raise ImageDecodeError(f"corrupt image header: {_one_line(e)}") from e
    width, height = im.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(a decompression bomb?); raise max_pixels if the image is genuine"
        )
    if width == 0 or height == 0:
        raise ImageDecodeError(f"image has an empty size {width}x{height}")
    try:
        with _strict_truncation():
            im.load()
    except Exception as e:
        raise ImageDecodeError(f"truncated or corrupt {im.format} image: {_one_line(e)}") from e
    return im


def _exif_upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block: viewers ignore it and so do we
        return im


def _to_8bit(im: Image.Image) -> Image.Image:
    """Scale high bit-depth grayscale to 0..255 (scaling, not clipping: 65535 -> 255)."""
    a = np.asarray(im)
    if im.mode.startswith("I;16"):
        a = a.astype(np.float64) / 257.0
    elif im.mode == "F" and np.nanmin(a) >= 0.0 and np.nanmax(a) <= 1.0:
        a = a.astype(np.float64) * 255.0
    elif im.mode == "I" and a.min() >= 0 and a.max() <= 65535:
        # PIL decodes 16-bit PNGs as "I" in some versions
        a = a.astype(np.float64) / (257.0 if a.max() > 255 else 1.0)
    else:
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a.astype(np.float64) - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    return Image.fromarray(np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8), mode="L")


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


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to an upright mode-"RGB" image, exactly as a viewer would show it.

    EXIF orientation is applied, alpha is composited over white, 16-bit data is scaled to 8 bits.
    Raises ImageDecodeError for empty, non-image, truncated or corrupt data and for images whose
    header declares more than `max_pixels` pixels (checked before any pixel is decoded).
    """
    if not data:
        raise ImageDecodeError("empty file: 0 bytes")
    im = _open_checked(data, max_pixels)
    try:
        rgb = _to_rgb(_exif_upright(im))
    except ImageDecodeError:
        raise
    except Exception as e:
        raise ImageDecodeError(f"cannot convert {im.mode} {im.format} image to RGB: {_one_line(e)}") from e
    rgb.load()
    return rgb


def load_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, bytes]:
    """Read a file and decode it; returns (RGB image, raw bytes). Errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ImageDecodeError(f"no such file: {path}") from e
    except IsADirectoryError as e:
        raise ImageDecodeError(f"is a directory, not an image: {path}") from e
    except OSError as e:
        raise ImageDecodeError(f"cannot read {path}: {_one_line(e)}") from e
    try:
        return decode_image(data, max_pixels=max_pixels), data
    except ImageDecodeError as e:
        raise ImageDecodeError(f"{path}: {e}") from e
