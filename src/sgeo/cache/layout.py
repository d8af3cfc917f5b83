"""The on-disk layout of a feature store: names, schema version, storage dtypes, array specs, errors.

Everything a reader needs to find its way in a store without sgeo is decided here:

    <store>/zarr.json          group attributes (schema version, fingerprint, dtype, shard size, counts)
    <store>/clip               (N, T, Dc)     inner chunk (1, T, Dc), shard (S, T, Dc)
    <store>/moge               (N, L, T, Dm)  inner chunk (1, L, T, Dm), shard (S, L, T, Dm)
    <store>/manifest.parquet   one row per image (see manifest.py)
    <store>/commits/NNNNNN.json one marker per finished shard, written last
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgeo.errors import SgeoError

SCHEMA_VERSION = 1
CLIP = "clip"
MOGE = "moge"
ARRAYS = (CLIP, MOGE)
MANIFEST = "manifest.parquet"
COMMITS = "commits"
GROUP_META = "zarr.json"

CLIP_DIMS = ("image", "token", "channel")
MOGE_DIMS = ("image", "layer", "token", "channel")

STATUSES = ("pending", "ok", "failed")
COMPRESSORS = (None, "zstd")
ZSTD_LEVEL = 3

# Keys of the group attributes that the store owns; caller `attributes` may not use them.
RESERVED_ATTRS = (
    "sgeo_schema_version",
    "sgeo_dtype",
    "dtype",
    "num_rows",
    "shard_size",
    "num_shards",
    "clip_shape",
    "moge_shape",
    "compressor",
    "fingerprint",
    "fingerprint_digest",
    "counts",
)

# Sharding index: one (offset, nbytes) pair of little-endian uint64 per inner chunk, then a crc32c.
INDEX_ENTRY_BYTES = 16
INDEX_CRC_BYTES = 4
EMPTY_CHUNK = 2**64 - 1


class StoreMismatchError(SgeoError):
    """The store at this URL was made for another encoder or another image list."""


@dataclass(frozen=True)
class StorageDtype:
    name: str  # "bf16" | "fp16": what users type
    sgeo_dtype: str  # "bfloat16" | "float16": what the 16-bit words mean (group and array attributes)
    numpy: np.dtype  # what the zarr arrays hold and what read() returns


DTYPES = {
    "bf16": StorageDtype("bf16", "bfloat16", np.dtype("uint16")),
    "fp16": StorageDtype("fp16", "float16", np.dtype("float16")),
}


def storage_dtype(name: str) -> StorageDtype:
    if name not in DTYPES:
        raise SgeoError(f"unknown store dtype {name!r}; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def check_compressor(compressor: str | None) -> str | None:
    if compressor not in COMPRESSORS:
        raise SgeoError(f"unknown store compressor {compressor!r}; use None or 'zstd'")
    return compressor


def marker_name(k: int) -> str:
    return f"{k:06d}.json"


def parse_marker_name(name: str) -> int | None:
    """Shard number of a marker file name, or None for anything else (temp files, strays)."""
    stem, dot, ext = name.rpartition(".")
    if dot and ext == "json" and len(stem) >= 6 and stem.isdigit():
        return int(stem)
    return None


def shard_key(array: str, k: int, ndim: int) -> str:
    """Key of shard k of an array, relative to the store root (default v3 chunk key encoding)."""
    return "/".join([array, "c", str(k)] + ["0"] * (ndim - 1))


def index_nbytes(shard_size: int) -> int:
    return shard_size * INDEX_ENTRY_BYTES + INDEX_CRC_BYTES


def row_nbytes(row_shape: tuple[int, ...], itemsize: int = 2) -> int:
    return int(np.prod(row_shape)) * itemsize


def shard_nbytes_uncompressed(rows: int, row_shape: tuple[int, ...], shard_size: int) -> int:
    """Exact size of an uncompressed shard object holding `rows` images."""
    return rows * row_nbytes(row_shape) + index_nbytes(shard_size)


def array_codecs(compressor: str | None) -> dict:
    """Keyword arguments for `zarr.create_array` (inside the sharding codec)."""
    if compressor == "zstd":
        from zarr.codecs import ZstdCodec

        return {"compressors": ZstdCodec(level=ZSTD_LEVEL, checksum=False), "filters": None}
    return {"compressors": None, "filters": None}


def expected_codecs(row_shape: tuple[int, ...], compressor: str | None) -> list[dict]:
    """The array metadata `codecs` that the fast reader understands (as JSON, one row per inner chunk)."""
    inner = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if compressor == "zstd":
        inner.append({"name": "zstd", "configuration": {"level": ZSTD_LEVEL, "checksum": False}})
    return [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [1, *row_shape],
                "codecs": inner,
                "index_codecs": [
                    {"name": "bytes", "configuration": {"endian": "little"}},
                    {"name": "crc32c"},
                ],
                "index_location": "end",
            },
        }
    ]
