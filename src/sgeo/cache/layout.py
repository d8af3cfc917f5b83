"""The on-disk layout of a feature store: names, schema version, the store encodings, array specs, errors.

Everything a reader needs to find its way in a store without sgeo is decided here:

    <store>/zarr.json           group attributes (schema version, fingerprint, encoding, shard size, counts,
                                `arrays`: {name: feature shape per image}, in the store's order)
    <store>/<name>              one array per name, (N, *shape[:-1], W): inner chunk (1, ...), shard (S, ...);
                                e.g. clip (N, T, Wc) and moge (N, L, T, Wm)
    <store>/manifest.parquet    one row per image (see manifest.py)
    <store>/commits/NNNNNN.json one marker per finished shard, written last (sha256 of the shard and of each row)
    <store>/commits/writer.lock who is writing the store (lock.py), while a writer runs

W is the stored width of a token row: the feature width D, plus SCALE_BYTES for encodings with a row scale.
An array name is a lower-case identifier that is none of the store's own entries. Stores written before
`arrays` existed (schema version 1, attributes `clip_shape` and `moge_shape`) read as {"clip", "moge"}.
ENCODINGS is the one list of store encodings; the torch side of each (tensor <-> stored words) is
`sgeo.pipeline.features`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from sgeo.errors import SgeoError

# Version 2: any named arrays (`arrays`). A store of exactly clip then moge is still written as version 1, with
# `clip_shape`/`moge_shape` beside `arrays`, so the sgeo before `arrays` reads it; any other set is version 2,
# which that sgeo refuses in one line (it would fail on the missing `clip_shape` with a traceback).
SCHEMA_VERSION = 2
LEGACY_SCHEMA_VERSION = 1
READABLE_SCHEMA_VERSIONS = (LEGACY_SCHEMA_VERSION, SCHEMA_VERSION)
LEGACY_ARRAYS = ("clip", "moge")  # the arrays of a version-1 store, in order
MANIFEST = "manifest.parquet"
COMMITS = "commits"
GROUP_META = "zarr.json"
LOCK = "writer.lock"  # inside COMMITS: beside the markers, never mistaken for one

ARRAY_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Names an array may not take: the store's own entries, and `row` (its marker digests would be `row_sha256`,
# the key of the per-row digests).
RESERVED_NAMES = (COMMITS, "row")
INNER_DIMS = ("layer", "token", "channel")  # the last axes of a feature array, as many as its rank

# Keys of the group attributes that the store owns; caller `attributes` may not use them.
RESERVED_ATTRS = (
    "sgeo_schema_version",
    "sgeo_dtype",
    "sgeo_encoding",
    "dtype",
    "num_rows",
    "shard_size",
    "num_shards",
    "arrays",
    "clip_shape",
    "moge_shape",
    "compressor",
    "fingerprint",
    "fingerprint_digest",
    "counts",
)

ARRAY_CONFIG = {
    "write_empty_chunks": True
}  # zarr runtime config: every row gets its inner chunk, fixed shard sizes

# Sharding index: one (offset, nbytes) pair of little-endian uint64 per inner chunk, then a crc32c.
INDEX_ENTRY_BYTES = 16
INDEX_CRC_BYTES = 4
EMPTY_CHUNK = 2**64 - 1

FP8_MAX = 448.0  # largest finite float8_e4m3fn
SCALE_BYTES = 4  # one little-endian float32 scale per token row, after the row's D code bytes

# The lossless compressor of `bf16-zstd`: blosc byte-shuffle (the 2 bytes of each word in separate planes:
# the sign/exponent plane compresses, the mantissa plane hardly) + zstd. Level 5 gave the best ratio at
# >= 1 GB/s decode per thread here (bench/store_read.py --codecs).
BLOSC = {"cname": "zstd", "clevel": 5, "shuffle": "shuffle", "typesize": 2, "blocksize": 0}


class StoreMismatchError(SgeoError):
    """The store at this URL was made for another encoder, another image list or another encoding."""


@dataclass(frozen=True)
class Encoding:
    """How feature values are stored: what the words mean, their zarr dtype, a row scale, a compressor."""

    name: str  # what users type (--dtype), recorded in the fingerprint and the group attributes
    values: str  # what the stored numbers are: bfloat16, float16, float32, float8_e4m3fn (sgeo_dtype)
    words: np.dtype  # dtype of the zarr arrays
    row_scale: bool = False  # True: each token row is D codes then a float32 scale (SCALE_BYTES)
    blosc: dict | None = None  # zarr v3 `blosc` codec configuration inside each shard, or None (raw)
    lossless: bool = True  # for features computed in `values` precision (bf16 towers for bf16 stores)
    about: str = ""  # one line for `sgeo cache plan`
    size_ratio: float = 1.0  # stored / raw bytes, measured (compressed encodings depend on the features)
    measured: str = ""  # the measured effect on training of a lossy encoding (bench/store_fidelity.py)

    def stored_shape(self, feature_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Row shape of the zarr array for features of `feature_shape` (..., D)."""
        shape = tuple(int(d) for d in feature_shape)
        return (*shape[:-1], shape[-1] + SCALE_BYTES) if self.row_scale else shape

    def row_nbytes(self, feature_shape: tuple[int, ...]) -> int:
        """Uncompressed bytes of one stored row (an image's features of one tower)."""
        return self.stored_row_nbytes(self.stored_shape(feature_shape))

    def stored_row_nbytes(self, stored_shape: tuple[int, ...]) -> int:
        """Uncompressed bytes of one row of stored words of `stored_shape` (the one rule for a row's bytes)."""
        return int(np.prod(stored_shape)) * self.words.itemsize

    def array_codecs(self) -> dict:
        """Keyword arguments for `zarr.create_array` (inside the sharding codec)."""
        if self.blosc is None:
            return {"compressors": None, "filters": None}
        from zarr.codecs import BloscCodec

        return {"compressors": BloscCodec(**self.blosc), "filters": None}

    def expected_codecs(self, stored_row_shape: tuple[int, ...]) -> list[dict]:
        """The array metadata `codecs` that the shard reader understands (as JSON, one row per inner chunk)."""
        inner = [{"name": "bytes", "configuration": {"endian": "little"}}]
        if self.blosc is not None:
            inner.append({"name": "blosc", "configuration": dict(self.blosc)})
        if self.words.itemsize == 1:
            inner[0] = {"name": "bytes"}  # zarr writes no endianness for one-byte words
        return [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [1, *stored_row_shape],
                    "codecs": inner,
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                    "index_location": "end",
                },
            }
        ]

    def describe(self) -> dict:
        """What the arrays' attributes say about the encoding, for readers without sgeo."""
        out = {"name": self.name, "values": self.values, "words": self.words.name}
        if self.row_scale:
            out["row_scale"] = (
                f"each token row holds D {self.values} codes (uint8) then its float32 scale "
                f"({SCALE_BYTES} bytes, little-endian): value = code * scale"
            )
        if self.blosc is not None:
            out["compressor"] = f"blosc {self.blosc['cname']} level {self.blosc['clevel']}, byte shuffle"
        return out


ENCODINGS = {
    e.name: e
    for e in (
        Encoding("bf16", "bfloat16", np.dtype("uint16"), about="bf16 words, raw (the default)"),
        Encoding("fp16", "float16", np.dtype("float16"), about="float16, raw"),
        Encoding("fp32", "float32", np.dtype("float32"), about="float32, raw: exact for fp32 towers (CPU)"),
        Encoding(
            "bf16-zstd",
            "bfloat16",
            np.dtype("uint16"),
            blosc=BLOSC,
            about="bf16 words, byte-shuffle + zstd: lossless; size estimated, it depends on the features",
            size_ratio=0.72,  # bench/store_read.py: 0.724 on CLIP/DINOv2-like reference-dims arrays (tiny: 0.62)
        ),
        Encoding(
            "fp8",
            "float8_e4m3fn",
            np.dtype("uint8"),
            row_scale=True,
            lossless=False,
            about="float8_e4m3fn codes with a float32 scale per token row (amax / 448): lossy",
            measured=(
                "measured (bench/store_fidelity.py): per-token relative L2 error mean 1.9%, max 3.2% at "
                "reference dims (CLIP/DINOv2-like arrays; per-channel scales: 2.5% / 5.7%), 2.5% / 3.4% on "
                "tiny; tiny stage-1 loss after 300 steps within 0.004% of the bf16 store's"
            ),
        ),
    )
}


def encoding(name: str) -> Encoding:
    if name not in ENCODINGS:
        raise SgeoError(f"unknown store encoding {name!r}; use one of {', '.join(ENCODINGS)}")
    return ENCODINGS[name]


def check_array_name(name) -> str:
    if not isinstance(name, str) or not ARRAY_NAME.fullmatch(name) or name in RESERVED_NAMES:
        raise SgeoError(
            f"array name {name!r} is not allowed: use a lower-case identifier ([a-z][a-z0-9_]*) other than "
            f"{', '.join(RESERVED_NAMES)}"
        )
    return name


def check_names_held(url: str, held: list[str], names, *, exact: bool) -> None:
    """Refuse array names that store `url` (arrays `held`) does not hold (exact: or that leave one out)."""
    unknown = [repr(n) for n in names if n not in held]
    missing = [repr(n) for n in held if n not in names] if exact else []
    if unknown or missing:
        got = "; ".join(
            ([f"no array {', '.join(unknown)} in the store"] if unknown else [])
            + ([f"array {', '.join(missing)} missing"] if missing else [])
        )
        todo = "pass exactly those names" if exact else "read some of those"
        raise SgeoError(f"store {url} holds arrays {', '.join(held)}: {got}; {todo}")


def check_shapes(shapes) -> dict[str, tuple[int, ...]]:
    """{array name: feature shape per image}, checked: at least one array, valid names, positive sizes."""
    if not isinstance(shapes, dict) or not shapes:
        raise SgeoError(f"shapes must map at least one array name to its feature shape, got {shapes!r}")
    out = {}
    for name, shape in shapes.items():
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            dims = ()
        if not dims or min(dims) < 1:
            raise SgeoError(
                f"shape of array {check_array_name(name)!r} must be positive sizes, got {shape!r}"
            )
        out[check_array_name(name)] = dims
    return out


def dimension_names(rank: int) -> tuple[str, ...]:
    """Zarr dimension names of an array of features of `rank` axes: image, then (layer,) token, channel."""
    lead = tuple(f"axis{i}" for i in range(1, rank - len(INNER_DIMS) + 1))
    return ("image", *lead, *INNER_DIMS[max(0, len(INNER_DIMS) - rank) :])


def schema_version(names) -> int:
    """The version a store of these arrays is written with (see SCHEMA_VERSION)."""
    return LEGACY_SCHEMA_VERSION if tuple(names) == LEGACY_ARRAYS else SCHEMA_VERSION


def shape_attrs(shapes: dict[str, tuple[int, ...]]) -> dict:
    """The group attributes that name the arrays; a version-1 store also gets its clip/moge shapes."""
    attrs: dict = {"arrays": {name: list(shape) for name, shape in shapes.items()}}
    if schema_version(shapes) == LEGACY_SCHEMA_VERSION:
        attrs.update({f"{name}_shape": list(shape) for name, shape in shapes.items()})
    return attrs


def shapes_from_attrs(url: str, attrs: dict) -> dict[str, tuple[int, ...]]:
    """{array name: feature shape} of a store, from `arrays`, or from a version-1 store's clip/moge shapes."""
    try:
        if "arrays" in attrs:
            return check_shapes(attrs["arrays"])
        return check_shapes({name: attrs[f"{name}_shape"] for name in LEGACY_ARRAYS})
    except (SgeoError, KeyError) as e:
        raise SgeoError(
            f"store {url}: zarr.json does not name its arrays ({e}); the store is damaged"
        ) from None


def marker_name(k: int) -> str:
    return f"{k:06d}.json"


def marker_key(k: int) -> str:
    """Key of shard k's commit marker, relative to the store root."""
    return f"{COMMITS}/{marker_name(k)}"


def parse_marker_name(name: str) -> int | None:
    """Shard number of a marker file name, or None for anything else (temp files, the lock, strays)."""
    stem, dot, ext = name.rpartition(".")
    if dot and ext == "json" and len(stem) >= 6 and stem.isdigit():
        return int(stem)
    return None


def chunk_prefix(array: str) -> str:
    """The prefix of every shard object of an array (default v3 chunk key encoding: `<array>/c/...`)."""
    return f"{array}/c/"


def shard_key(array: str, k: int, row_shape: tuple[int, ...]) -> str:
    """Key of shard k of an array whose rows have `row_shape` (feature or stored: same rank), relative to the
    store root: the shard grid is split along the image axis only, so every other index is 0."""
    return chunk_prefix(array) + "/".join([str(k)] + ["0"] * len(row_shape))


def num_shards(num_rows: int, shard_size: int) -> int:
    """Shards of `shard_size` rows that `num_rows` rows fill (the last one may be short)."""
    return -(-num_rows // shard_size)


def index_nbytes(shard_size: int) -> int:
    return shard_size * INDEX_ENTRY_BYTES + INDEX_CRC_BYTES


def shard_nbytes_uncompressed(rows: int, row_nbytes: int, shard_size: int) -> int:
    """Exact size of an uncompressed shard object holding `rows` images of `row_nbytes` each."""
    return rows * row_nbytes + index_nbytes(shard_size)


def shard_size_problem(
    name: str, k: int, key: str, size: int | None, want: int | None, shard_size: int
) -> str | None:
    """What is wrong with the size of committed shard k's object `key` of array `name` (`size` bytes, None when
    missing; `want`: its exact size, None when compressed), or None when it may be sound."""
    if size is None:
        return f"{name} shard {k} is committed but its object {key} is missing"
    if want is not None and size != want:
        return f"{name} shard {k} object {key} has {size} bytes, expected {want} (truncated?)"
    if size < index_nbytes(shard_size):
        return f"{name} shard {k} object {key} has {size} bytes, too small for its index"
    return None
