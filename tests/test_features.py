"""The feature codec (tensor <-> stored words) for every store encoding, and the plain-numpy recipes of README."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgeo.cache import ENCODINGS
from sgeo.errors import SgeoError
from sgeo.pipeline.features import FP8_ABS, FP8_REL, decode, encode, fp8_bound


def features(seed: int = 0) -> torch.Tensor:
    """[2, 3, 16, 64] heavy-tailed features with outlier channels, a high-norm token, a zero row, tiny values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.distributions.StudentT(4.0).sample((2, 3, 16, 64)) * torch.rand(64, generator=g).add(0.1)
    x[..., 5] *= 40  # an outlier channel
    x[:, :, 3] *= 10  # a high-norm token
    x[0, 0, 7] = 0  # an all-zero row
    x[1, 2, 9] *= 1e-6  # a row of tiny values (subnormal codes)
    return x


@pytest.mark.parametrize("name", ["bf16", "bf16-zstd", "fp16", "fp32"])
def test_lossless_encodings_are_bit_exact(name):
    values = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    x = features().to(values[ENCODINGS[name].values])  # features computed in the encoding's precision
    words = encode(x, name)
    assert words.dtype == ENCODINGS[name].words and words.shape == x.shape
    back = decode(words, name)
    assert back.dtype == x.dtype and torch.equal(back.view(torch.int8), x.view(torch.int8))


def test_fp8_is_within_its_documented_bound_and_half_the_bytes():
    x = features()
    words = encode(x, "fp8")
    assert words.dtype == np.uint8 and words.shape == (*x.shape[:-1], 64 + 4)
    assert words.nbytes == x.numel() + 4 * x[..., 0].numel()  # 1 byte per value + a float32 per row
    back = decode(words, "fp8", torch.float32)
    err, bound = (back - x).abs(), fp8_bound(x)
    assert torch.all(err <= bound * (1 + 1e-6)), float((err / bound).max())
    assert float((err / bound).max()) > 0.5  # the bound is tight, not vacuous
    assert torch.equal(back[0, 0, 7], torch.zeros(64))
    # relative to the row's largest value, no element is off by more than FP8_REL + FP8_ABS / 448
    amax = x.abs().amax(-1, keepdim=True)
    assert float((err / amax.clamp_min(1e-30)).max()) <= FP8_REL + FP8_ABS / 448 + 1e-6
    assert decode(words, "fp8").dtype == torch.bfloat16  # the default: what the adapters take on GPU


def test_a_store_of_one_encoding_is_refused_as_another():
    x = features()
    with pytest.raises(SgeoError, match="uint8 .* are not bf16 words"):
        decode(encode(x, "fp8"), "bf16")
    with pytest.raises(SgeoError, match="uint16 .* are not fp8 words"):
        decode(encode(x, "bf16"), "fp8")
    with pytest.raises(SgeoError, match="unknown store encoding 'int4'; use one of bf16, fp16"):
        encode(x, "int4")


def test_readme_recipes_decode_without_sgeo():
    """The numpy-only decodes that README's "Reading a store without sgeo" gives."""
    x = features()
    words = encode(x, "bf16")
    plain = (words.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(plain, decode(words, "bf16", torch.float32).numpy())

    words = encode(x, "fp8")
    codes, scale = words[..., :-4], words[..., -4:].copy().view("<f4")  # D codes, then a float32 scale
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp, man = (codes >> 3) & 0xF, (codes & 0x7).astype(np.float64)
    value = sign * np.where(exp == 0, man / 8 * 2.0**-6, (1 + man / 8) * 2.0 ** (exp.astype(np.float64) - 7))
    plain = (value * scale).astype(np.float32)
    assert np.array_equal(plain, decode(words, "fp8", torch.float32).numpy())


def test_extract_encodes_shards_through_the_codec(tiny):
    """extract's `encode_shard` writes exactly `encode(encode_images(pixels))` in every encoding; a batch
    without an ok image stays zero."""
    from sgeo.cache.layout import encoding
    from sgeo.jobs.extract import encode_shard

    model, _ = tiny
    size = model.config.image_size
    pixels = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(0))
    ok = np.array([True, True, False, False, True])
    # batch by batch, as encode_shard runs: a matmul's last bit may depend on the batch size
    with torch.inference_mode():
        batches = [model.encode_images(pixels[start : start + 2]) for start in range(0, 5, 2)]
    clip, moge = (torch.cat([batch[tower] for batch in batches]) for tower in ("clip", "moge"))
    for name in ENCODINGS:
        got_clip, got_moge = encode_shard(model.towers, pixels, ok, 2, name).values()
        assert got_clip.shape == (5, *encoding(name).stored_shape(model.config.feature_shapes["clip"]))
        assert np.array_equal(got_clip[[0, 1, 4]], encode(clip, name)[[0, 1, 4]]), name
        assert np.array_equal(got_moge[[0, 1, 4]], encode(moge, name)[[0, 1, 4]]), name
        assert not got_clip[2:4].any() and not got_moge[2:4].any()
