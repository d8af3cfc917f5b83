"""The feature codec, torch side: float tensors <-> the words a store holds, for every store encoding.

Every writer (extract), reader (the training collator), bench and test converts through `encode` and
`decode`; the encodings themselves (names, word dtypes, row layout) are listed once in
`sgeo.cache.layout.ENCODINGS`.

- `bf16`, `bf16-zstd`: bfloat16 values as their uint16 words (compression happens inside the store).
- `fp16`, `fp32`: float16 / float32 values.
- `fp8`: per token row, scale = amax(|row|) / 448 (1 for an all-zero row), codes = float8_e4m3fn(row /
  scale), stored as the row's D code bytes followed by the scale's 4 float32 bytes. Bound, per element
  x of a row with scale s (FP8_REL = 2^-4, half of e4m3's 3-bit mantissa step; FP8_ABS = 2^-10, half of
  its smallest subnormal step 2^-9):
      |decode(encode(x)) - x| <= FP8_REL * |x| + FP8_ABS * s        (decoded to float32)
  plus the rounding of the decode dtype when it is not float32 (bfloat16: 2^-9 relative).
"""

from __future__ import annotations

import numpy as np
import torch

from sgeo.cache.layout import FP8_MAX, SCALE_BYTES, encoding
from sgeo.errors import SgeoError

FP8_REL = 2.0**-4
FP8_ABS = 2.0**-10

_VALUES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float32": torch.float32,
    "float8_e4m3fn": torch.float8_e4m3fn,
}


# Every float8_e4m3fn code's value: a table lookup decodes about 3x faster than torch's fp8 conversion on CPU.
_FP8_VALUES = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float().numpy()


def value_dtype(name: str) -> torch.dtype:
    """The torch dtype an encoding's features are naturally computed and decoded in (bf16 for fp8)."""
    values = _VALUES[encoding(name).values]
    return torch.bfloat16 if values == torch.float8_e4m3fn else values


def encode(t: torch.Tensor, name: str) -> np.ndarray:
    """Features [..., D] (any float dtype, any device) -> stored words [..., W] (numpy, on the CPU)."""
    enc = encoding(name)
    if enc.values == "bfloat16":
        return t.to(torch.bfloat16).view(torch.uint16).cpu().numpy()
    if enc.values in ("float16", "float32"):
        return t.detach().to(_VALUES[enc.values]).cpu().numpy()
    x = t.detach().to(torch.float32)
    amax = x.abs().amax(dim=-1, keepdim=True)  # [..., 1]
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    codes = (x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).view(torch.uint8)  # [..., D]
    d = x.shape[-1]
    out = np.empty((*x.shape[:-1], d + SCALE_BYTES), np.uint8)
    out[..., :d] = codes.cpu().numpy()
    out[..., d:] = scale.cpu().numpy().astype("<f4").view(np.uint8)
    return out


def decode(words: np.ndarray, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Stored words [..., W] -> features [..., D] as a tensor of `dtype` (default: `value_dtype(name)`).

    16-bit words are reinterpreted without a copy when no other dtype is asked. Words of another
    encoding's dtype or width are refused (a store of one encoding read as another)."""
    enc = encoding(name)
    words = np.asarray(words)
    if words.dtype != enc.words or (enc.row_scale and words.shape[-1] <= SCALE_BYTES):
        raise SgeoError(
            f"features stored as {words.dtype} {tuple(words.shape)} are not {enc.name} words "
            f"({enc.words}); read them with the store's own encoding"
        )
    dtype = dtype or value_dtype(name)
    if not enc.row_scale:
        tensor = torch.from_numpy(np.ascontiguousarray(words))
        if enc.values == "bfloat16":
            tensor = tensor.view(torch.bfloat16)
        return tensor if tensor.dtype == dtype else tensor.to(dtype)
    d = words.shape[-1] - SCALE_BYTES
    values = np.take(_FP8_VALUES, words[..., :d])  # [..., D] float32, exact (a 256-entry table)
    values *= np.ascontiguousarray(words[..., d:]).view("<f4")  # [..., 1]: the row's scale
    tensor = torch.from_numpy(values)
    return tensor if dtype == torch.float32 else tensor.to(dtype)


def fp8_bound(x: torch.Tensor) -> torch.Tensor:
    """The documented per-element error bound of `fp8` for features x [..., D] (decoded to float32)."""
    x = x.to(torch.float32)
    amax = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return FP8_REL * x.abs() + FP8_ABS * scale
