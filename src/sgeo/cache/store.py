"""FeatureStore: create, resume, write shards of, and read a Zarr v3 store of CLIP and MoGe features.

One store holds the encoder outputs of one image set under one encoder fingerprint (layout.py). Rows are
fixed at `create`; writers own disjoint shard-aligned row ranges, write each shard with one assignment
(one object per array), then the commit marker, last. Only committed shards count.

Reading a store without sgeo (plain zarr + pyarrow)::

    import json, numpy as np, zarr, pyarrow.parquet as pq, fsspec

    g = zarr.open_group("features.zarr", mode="r")          # or an s3://... URL + storage_options=
    attrs = g.attrs.asdict()                                 # fingerprint, dtype, shard_size, counts, ...
    manifest = pq.read_table("features.zarr/manifest.parquet").to_pandas()   # after finalize
    clip, moge = g["clip"], g["moge"]                        # (N, T, Dc), (N, L, T, Dm)
    i = manifest.index[manifest.image_id == "000000039769"][0]
    words = clip[i]                                          # (T, Dc) uint16 words when dtype is bf16
    if attrs["sgeo_dtype"] == "bfloat16":                    # bf16 -> float32 is a 16-bit left shift
        feats = (words.astype(np.uint32) << 16).view(np.float32)
    else:                                                    # fp16 is stored as zarr float16
        feats = words.astype(np.float32)
    # torch: torch.from_numpy(words).view(torch.bfloat16)

    # Before finalize, statuses live in the commit markers: shard k is done iff commits/{k:06d}.json
    # exists; its "records" hold row, image_id, status ("ok" | "failed"), error, content_hash, width,
    # height. Rows of uncommitted shards are pending and their array contents are undefined.
    fs = fsspec.filesystem("file")
    done = {int(p.rsplit("/", 1)[1][:6]) for p in fs.glob("features.zarr/commits/*.json")}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import OrderedDict

import google_crc32c  # zarr's own dependency, for the shard index checksum
import numpy as np
import pyarrow as pa
import zarr

from sgeo.cache import layout
from sgeo.cache.fingerprint import canonicalize, check_fingerprint, fingerprint_digest, short
from sgeo.cache.layout import CLIP, COMMITS, GROUP_META, MANIFEST, MOGE, StoreMismatchError
from sgeo.cache.location import Location
from sgeo.cache.manifest import (
    from_parquet_bytes,
    initial_table,
    marker_bytes,
    merge,
    normalize_records,
    parse_marker,
    status_counts,
    to_parquet_bytes,
)
from sgeo.errors import SgeoError

_ARRAY_CONFIG = {"write_empty_chunks": True}  # every row gets its inner chunk: fixed shard sizes


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))).hexdigest()


def _read_group_attrs(loc: Location) -> dict | None:
    """Attributes of the root zarr.json, or None when there is none."""
    if not loc.exists(GROUP_META):
        return None
    try:
        meta = json.loads(loc.cat(GROUP_META))
    except ValueError as e:
        raise SgeoError(f"{loc.url}/zarr.json is not valid JSON ({e}); the store is damaged") from e
    return meta.get("attributes", {}) if meta.get("node_type") == "group" else {}


class _ArrayReader:
    """Reads rows of one sharded array straight from its shard objects (Zarr v3 sharding format).

    A zarr `__getitem__` costs about 1 ms of Python and event-loop overhead, more than reading a 1 MB row
    from page cache; a training loader reads one image at a time, so this reader parses each shard's index
    once and then issues one positioned read per row. Used only when the array metadata is exactly what
    `create` writes (layout.expected_codecs); otherwise reads go through zarr.
    """

    MAX_OPEN_FILES = 64

    def __init__(
        self,
        loc: Location,
        name: str,
        row_shape: tuple[int, ...],
        dtype: np.dtype,
        shard_size: int,
        compressor: str | None,
    ):
        self.loc, self.name, self.row_shape, self.dtype = loc, name, tuple(row_shape), dtype
        self.shard_size = shard_size
        self.row_bytes = layout.row_nbytes(self.row_shape, dtype.itemsize)
        self.index_bytes = layout.index_nbytes(shard_size)
        self._zstd = None
        if compressor == "zstd":
            from numcodecs import Zstd

            self._zstd = Zstd()
        self._index: dict[int, list[tuple[int, int]]] = {}
        self._fds: OrderedDict[int, int] = OrderedDict()

    def key(self, k: int) -> str:
        return layout.shard_key(self.name, k, 1 + len(self.row_shape))

    def _damaged(self, k: int, what: str) -> SgeoError:
        return SgeoError(
            f"store {self.loc.url}: {self.name} shard {k} {what}; run `sgeo store verify {self.loc.url}` "
            "and rerun extract to redo it"
        )

    def _fd(self, k: int) -> int:
        fd = self._fds.get(k)
        if fd is None:
            try:
                fd = os.open(self.loc.path(self.key(k)), os.O_RDONLY)
            except FileNotFoundError:
                raise self._damaged(k, "is missing although committed") from None
            self._fds[k] = fd
            if len(self._fds) > self.MAX_OPEN_FILES:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(k)
        return fd

    def index(self, k: int) -> list[tuple[int, int]]:
        idx = self._index.get(k)
        if idx is not None:
            return idx
        n = self.index_bytes
        if self.loc.local:
            fd = self._fd(k)
            size = os.fstat(fd).st_size
            raw = os.pread(fd, n, size - n) if size >= n else b""
        else:
            try:
                raw = self.loc.fs.cat_file(self.loc.path(self.key(k)), start=-n)
            except FileNotFoundError:
                raise self._damaged(k, "is missing although committed") from None
        if len(raw) != n:
            raise self._damaged(k, "is truncated")
        if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise self._damaged(k, "has a corrupt index (checksum mismatch)")
        idx = [tuple(e) for e in np.frombuffer(raw[:-4], dtype="<u8").reshape(self.shard_size, 2).tolist()]
        self._index[k] = idx  # [(offset, nbytes)] per inner chunk, as Python ints: cheap per-row lookups
        return idx

    def forget(self, k: int) -> None:
        self._index.pop(k, None)
        fd = self._fds.pop(k, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._index.clear()

    def read(self, rows: list[int], out: np.ndarray) -> None:
        """out[i] = row rows[i]; out is C-contiguous (len(rows), *row_shape)."""
        flat = out.reshape(len(rows), -1).view(np.uint8)  # [n, row_bytes]
        ranges = []  # (i, k, offset, nbytes) of rows to fetch from remote storage
        for i, row in enumerate(rows):
            k, j = divmod(row, self.shard_size)
            offset, nbytes = self.index(k)[j]
            if offset == layout.EMPTY_CHUNK and nbytes == layout.EMPTY_CHUNK:
                flat[i] = 0
                continue
            if self._zstd is None and nbytes != self.row_bytes:
                raise self._damaged(k, f"holds {nbytes} bytes for row {row}, expected {self.row_bytes}")
            if not self.loc.local:
                ranges.append((i, k, offset, nbytes))
            elif self._zstd is None:
                got = os.preadv(self._fd(k), [memoryview(flat[i])], offset)
                if got != nbytes:
                    raise self._damaged(k, "is truncated")
            else:
                self._decode(os.pread(self._fd(k), nbytes, offset), flat[i], k)
        if ranges:
            paths = [self.loc.path(self.key(k)) for _, k, _, _ in ranges]
            starts = [o for _, _, o, _ in ranges]
            ends = [o + n for _, _, o, n in ranges]
            for (i, k, _, nbytes), data in zip(
                ranges, self.loc.fs.cat_ranges(paths, starts, ends), strict=True
            ):
                if len(data) != nbytes:
                    raise self._damaged(k, "is truncated")
                if self._zstd is None:
                    flat[i] = np.frombuffer(data, dtype=np.uint8)
                else:
                    self._decode(data, flat[i], k)

    def _decode(self, data: bytes, out: np.ndarray, k: int) -> None:
        try:
            self._zstd.decode(data, out=out)
        except (RuntimeError, ValueError) as e:
            raise self._damaged(k, f"does not decompress ({e})") from e


class FeatureStore:
    """A Zarr v3 group of CLIP (N, T, Dc) and MoGe (N, L, T, Dm) features, a manifest and commit markers."""

    def __init__(self, loc: Location, attrs: dict):
        self._loc = loc
        self._attrs = attrs
        self.url: str = loc.url
        self.num_rows: int = int(attrs["num_rows"])
        self.shard_size: int = int(attrs["shard_size"])
        self.num_shards: int = int(attrs["num_shards"])
        self.dtype: str = attrs["dtype"]
        self.compressor: str | None = attrs.get("compressor")
        self.fingerprint: dict = attrs["fingerprint"]
        self.fingerprint_digest: str = attrs["fingerprint_digest"]
        self.clip_shape: tuple[int, int] = tuple(attrs["clip_shape"])
        self.moge_shape: tuple[int, int, int] = tuple(attrs["moge_shape"])
        self._np_dtype = layout.storage_dtype(self.dtype).numpy
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._group = None
        self._arrays: dict = {}
        self._readers: dict[str, _ArrayReader] | None = None
        self._committed: set[int] | None = None
        self._markers: dict[int, dict] = {}
        self._base: pa.Table | None = None
        self._ids: list[str] | None = None

    # ---------------------------------------------------------------- create / open

    @classmethod
    def create(
        cls,
        url: str,
        *,
        image_ids: list[str],
        paths: list[str],
        fingerprint: dict,
        clip_shape: tuple[int, int],
        moge_shape: tuple[int, int, int],
        dtype: str = "bf16",
        shard_size: int = 64,
        compressor: str | None = None,
        attributes: dict | None = None,
        storage_options: dict | None = None,
    ) -> FeatureStore:
        """Create a store with every row pending; if the same store already exists there, reopen it to resume.

        "The same" means same fingerprint, dtype, shapes, shard size, compressor and image ids (in order);
        anything else raises StoreMismatchError. Source paths may differ on resume (a moved dataset); the
        stored ones are kept. Call it once (the job driver); parallel writers then `open` the store.
        """
        image_ids, paths = [str(i) for i in image_ids], [str(p) for p in paths]
        sdtype = layout.storage_dtype(dtype)
        layout.check_compressor(compressor)
        clip_shape = _check_shape("clip_shape", clip_shape, 2)
        moge_shape = _check_shape("moge_shape", moge_shape, 3)
        if not image_ids:
            raise SgeoError("cannot create a feature store with no images; check the dataset")
        if len(paths) != len(image_ids):
            raise SgeoError(f"got {len(image_ids)} image ids but {len(paths)} paths; they must pair up")
        seen: set[str] = set()
        for image_id in image_ids:
            if image_id in seen:
                raise SgeoError(f"image id {image_id!r} appears more than once; image ids must be unique")
            seen.add(image_id)
        if not isinstance(shard_size, int) or shard_size < 1:
            raise SgeoError(f"shard_size must be a positive integer, got {shard_size!r}")
        fingerprint = canonicalize(fingerprint)
        extra = canonicalize(attributes or {})
        clash = sorted(set(extra) & set(layout.RESERVED_ATTRS))
        if clash:
            raise SgeoError(f"attributes {clash} are reserved by the store; rename them")

        loc = Location(url, storage_options)
        existing = _read_group_attrs(loc)
        if existing is not None:
            if "sgeo_schema_version" not in existing:
                raise SgeoError(
                    f"{loc.url} holds a zarr node that is not an sgeo feature store; use another --store"
                )
            if loc.exists(MANIFEST):
                store = cls._from_attrs(loc, existing)
                store._check_resume(
                    fingerprint, sdtype.name, clip_shape, moge_shape, shard_size, compressor, image_ids
                )
                return store
            if loc.listdir(COMMITS):
                raise SgeoError(
                    f"store {loc.url} has commit markers but no manifest.parquet; delete it or use another --store"
                )
            # else: a create that was killed before its last step; start over below
        elif loc.listdir(""):
            raise SgeoError(
                f"{loc.url} exists and is not an sgeo feature store (no zarr.json); use a new --store"
            )

        n = len(image_ids)
        attrs = {
            "sgeo_schema_version": layout.SCHEMA_VERSION,
            "sgeo_dtype": sdtype.sgeo_dtype,
            "dtype": sdtype.name,
            "num_rows": n,
            "shard_size": shard_size,
            "num_shards": -(-n // shard_size),
            "clip_shape": list(clip_shape),
            "moge_shape": list(moge_shape),
            "compressor": compressor,
            "fingerprint": fingerprint,
            "fingerprint_digest": fingerprint_digest(fingerprint),
            "counts": {"ok": 0, "failed": 0, "pending": n},
        }
        if "preprocessing" in fingerprint and "preprocessing" not in extra:
            attrs["preprocessing"] = fingerprint["preprocessing"]
        attrs.update(extra)

        group = zarr.create_group(loc.zarr_store, attributes=attrs, overwrite=True, zarr_format=3)
        for name, row_shape, dims in (
            (CLIP, clip_shape, layout.CLIP_DIMS),
            (MOGE, moge_shape, layout.MOGE_DIMS),
        ):
            group.create_array(
                name,
                shape=(n, *row_shape),
                chunks=(1, *row_shape),
                shards=(shard_size, *row_shape),
                dtype=sdtype.numpy,
                fill_value=0,
                dimension_names=dims,
                attributes={"sgeo_dtype": sdtype.sgeo_dtype},
                config=_ARRAY_CONFIG,
                **layout.array_codecs(compressor),
            )
        loc.put_atomic(MANIFEST, to_parquet_bytes(initial_table(image_ids, paths)))  # last: the store exists
        return cls._from_attrs(loc, attrs)

    @classmethod
    def open(
        cls, url: str, *, expect_fingerprint: dict | None = None, storage_options: dict | None = None
    ) -> FeatureStore:
        """Open an existing store; with expect_fingerprint, refuse a store made by other encoders."""
        loc = Location(url, storage_options)
        attrs = _read_group_attrs(loc)
        if attrs is None:
            raise SgeoError(
                f"no feature store at {loc.url} (no zarr.json); run `sgeo extract` or check --store"
            )
        if "sgeo_schema_version" not in attrs:
            raise SgeoError(f"{loc.url} is a zarr node but not an sgeo feature store; check --store")
        if not loc.exists(MANIFEST):
            raise SgeoError(
                f"store {loc.url} is incomplete (no manifest.parquet); rerun extract to create it"
            )
        store = cls._from_attrs(loc, attrs)
        if expect_fingerprint is not None:
            check_fingerprint(store.url, store.fingerprint, expect_fingerprint)
        return store

    @classmethod
    def _from_attrs(cls, loc: Location, attrs: dict) -> FeatureStore:
        version = attrs.get("sgeo_schema_version")
        if version != layout.SCHEMA_VERSION:
            raise SgeoError(
                f"store {loc.url} has schema version {version}, this sgeo reads {layout.SCHEMA_VERSION}; "
                "use the sgeo version that wrote it or re-extract"
            )
        return cls(loc, attrs)

    def _check_resume(self, fingerprint, dtype, clip_shape, moge_shape, shard_size, compressor, image_ids):
        check_fingerprint(self.url, self.fingerprint, fingerprint)
        for key, have, asked in (
            ("dtype", self.dtype, dtype),
            ("clip_shape", self.clip_shape, tuple(clip_shape)),
            ("moge_shape", self.moge_shape, tuple(moge_shape)),
            ("shard_size", self.shard_size, shard_size),
            ("compressor", self.compressor, compressor),
        ):
            if have != asked:
                raise StoreMismatchError(
                    f"store {self.url} has {key}={have} but {asked} was asked; use the same setting or another --store"
                )
        stored = self._image_ids()
        if stored != image_ids:
            if len(stored) != len(image_ids):
                what = f"holds {len(stored)} images but {len(image_ids)} were given"
            else:
                r = next(i for i, (a, b) in enumerate(zip(stored, image_ids, strict=True)) if a != b)
                what = f"has image {short(stored[r], 40)!r} at row {r} but the list gives {short(image_ids[r], 40)!r}"
            raise StoreMismatchError(
                f"store {self.url} was made for another image list: it {what}; use another --store or the same list"
            )

    # ---------------------------------------------------------------- properties and rows

    @property
    def attributes(self) -> dict:
        """All group attributes (store keys and the caller's extra attributes), as read at open."""
        return self._attrs

    def shard_rows(self, k: int) -> range:
        if not 0 <= k < self.num_shards:
            raise SgeoError(
                f"shard {k} is out of range; store {self.url} has shards 0..{self.num_shards - 1}"
            )
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.num_rows))

    def committed_shards(self) -> set[int]:
        """Shards whose commit marker exists (listed fresh each call)."""
        done = set()
        for name in self._loc.listdir(COMMITS):
            k = layout.parse_marker_name(name)
            if k is not None and k < self.num_shards:
                done.add(k)
        self._committed = done
        return set(done)

    def pending_shards(self) -> list[int]:
        done = self.committed_shards()
        return [k for k in range(self.num_shards) if k not in done]

    # ---------------------------------------------------------------- writing

    def write_shard(self, k: int, clip: np.ndarray, moge: np.ndarray, records: list[dict]) -> None:
        """Write rows shard_rows(k): arrays first (one object each), then the commit marker.

        clip: [rows, T, Dc], moge: [rows, L, T, Dm] in the storage dtype (uint16 words for bf16, float16
        for fp16). Rows whose record says "failed" are stored as zeros whatever the arrays hold.
        """
        rows = self.shard_rows(k)
        clip = self._check_array("clip", clip, (len(rows), *self.clip_shape))
        moge = self._check_array("moge", moge, (len(rows), *self.moge_shape))
        recs = normalize_records(records, rows)
        failed = [i for i, r in enumerate(recs) if r["status"] == "failed"]
        if failed:
            clip, moge = clip.copy(), moge.copy()
            clip[failed] = 0
            moge[failed] = 0
        digests = {"clip_sha256": _sha256(clip), "moge_sha256": _sha256(moge)}
        ids = self._image_ids()[rows.start : rows.stop]
        marker = f"{COMMITS}/{layout.marker_name(k)}"
        self._loc.remove_partials(marker)
        self._loc.rm(marker)  # a rewrite un-commits first: a marker never covers half-written arrays
        if self._committed is not None:
            self._committed.discard(k)
        self._markers.pop(k, None)
        self._write_arrays(k, clip, moge)
        self._loc.put_atomic(marker, marker_bytes(k, rows, ids, recs, digests))
        if self._committed is not None:
            self._committed.add(k)

    def _check_array(self, name: str, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype != self._np_dtype:
            hint = (
                " (bf16 words: t.to(torch.bfloat16).view(torch.uint16).numpy())"
                if self.dtype == "bf16"
                else ""
            )
            raise SgeoError(
                f"{name} has dtype {a.dtype} but this {self.dtype} store takes {self._np_dtype}{hint}; convert before writing"
            )
        if a.shape != shape:
            raise SgeoError(
                f"{name} has shape {a.shape} but shard rows need {shape}; check the encoder output"
            )
        return np.ascontiguousarray(a)

    def _array(self, name: str):
        if name not in self._arrays:
            # open_array ignores `config`: the runtime config is set with with_config
            arr = zarr.open_array(self._loc.zarr_store, path=name, mode="r+", zarr_format=3)
            self._arrays[name] = arr.with_config(_ARRAY_CONFIG)
        return self._arrays[name]

    def _write_arrays(self, k: int, clip: np.ndarray, moge: np.ndarray) -> None:
        """The array half of write_shard: one assignment per array, exactly one shard object each."""
        rows = self.shard_rows(k)
        for name, data in ((CLIP, clip), (MOGE, moge)):
            key = layout.shard_key(name, k, data.ndim)
            self._loc.rm(key)  # a stale object from a killed run would be read back and merged
            self._loc.remove_partials(key)
            if self._readers:
                self._readers[name].forget(k)
            self._array(name)[rows.start : rows.stop] = data

    # ---------------------------------------------------------------- reading

    def _readers_or_none(self) -> dict[str, _ArrayReader] | None:
        """Fast readers when both arrays have exactly the codecs `create` writes; else None (zarr reads)."""
        if self._readers is None:
            readers = {}
            for name, row_shape in ((CLIP, self.clip_shape), (MOGE, self.moge_shape)):
                try:
                    meta = json.loads(self._loc.cat(f"{name}/{GROUP_META}"))
                except FileNotFoundError:
                    raise SgeoError(
                        f"store {self.url} has no {name} array; it is damaged, re-extract it"
                    ) from None
                if meta.get("codecs") != layout.expected_codecs(row_shape, self.compressor) or meta.get(
                    "chunk_key_encoding"
                ) != {"name": "default", "configuration": {"separator": "/"}}:
                    readers = {}
                    break
                readers[name] = _ArrayReader(
                    self._loc, name, row_shape, self._np_dtype, self.shard_size, self.compressor
                )
            self._readers = readers
        return self._readers or None

    def read(self, rows: np.ndarray | list[int] | slice | int) -> tuple[np.ndarray, np.ndarray]:
        """Features of rows, in the order asked: clip [n, T, Dc], moge [n, L, T, Dm], raw storage dtype.

        An int row gives arrays without the leading axis. Rows must be in committed shards.
        """
        single = isinstance(rows, (int, np.integer))
        if single:
            idx = [int(rows)]
        elif isinstance(rows, slice):
            idx = list(range(self.num_rows)[rows])
        else:
            arr = np.asarray(rows, dtype=np.int64)
            if arr.ndim != 1:
                raise SgeoError(f"rows must be one-dimensional, got shape {arr.shape}")
            idx = arr.tolist()
        if idx and (min(idx) < 0 or max(idx) >= self.num_rows):
            raise IndexError(f"rows out of range 0..{self.num_rows - 1} of store {self.url}")
        self._require_committed({r // self.shard_size for r in idx})
        clip = np.empty((len(idx), *self.clip_shape), self._np_dtype)
        moge = np.empty((len(idx), *self.moge_shape), self._np_dtype)
        readers = self._readers_or_none()
        if readers:
            readers[CLIP].read(idx, clip)
            readers[MOGE].read(idx, moge)
        elif idx:
            clip[...] = self._array(CLIP).oindex[np.asarray(idx)]
            moge[...] = self._array(MOGE).oindex[np.asarray(idx)]
        return (clip[0], moge[0]) if single else (clip, moge)

    def _require_committed(self, shards: set[int]) -> None:
        if self._committed is None or not shards <= self._committed:
            self.committed_shards()
        missing = sorted(shards - self._committed)
        if missing:
            rows = self.shard_rows(missing[0])
            raise SgeoError(
                f"rows {rows.start}..{rows.stop - 1} of store {self.url} are not extracted yet (shard "
                f"{missing[0]} has no commit marker); finish extract or read only ok_rows()"
            )

    # ---------------------------------------------------------------- manifest

    def _base_table(self) -> pa.Table:
        if self._base is None:
            self._base = from_parquet_bytes(self._loc.cat(MANIFEST))
            if self._base.num_rows != self.num_rows:
                raise SgeoError(
                    f"store {self.url}: manifest.parquet has {self._base.num_rows} rows but the arrays have "
                    f"{self.num_rows}; the store is damaged, re-extract it"
                )
        return self._base

    def _load_markers(self) -> dict[int, dict]:
        done = self.committed_shards()
        self._markers = {k: m for k, m in self._markers.items() if k in done}
        todo = sorted(done - set(self._markers))
        got = self._loc.cat_many([f"{COMMITS}/{layout.marker_name(k)}" for k in todo])
        for k in todo:
            self._markers[k] = parse_marker(got[f"{COMMITS}/{layout.marker_name(k)}"], k)
        return self._markers

    def manifest(self) -> pa.Table:
        """One row per image, statuses from the commit markers (rows of uncommitted shards are "pending")."""
        return merge(self._base_table(), self._load_markers())

    def _image_ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self._base_table().column("image_id").to_pylist()
        return self._ids

    def row_of(self) -> dict[str, int]:
        """image_id -> row."""
        return {image_id: row for row, image_id in enumerate(self._image_ids())}

    def ok_rows(self) -> np.ndarray:
        """Rows committed with status "ok", ascending."""
        status = self.manifest().column("status").to_numpy(zero_copy_only=False)
        return np.flatnonzero(status == "ok").astype(np.int64)

    def finalize(self) -> None:
        """Rewrite manifest.parquet with the committed statuses and record the counts in the attributes."""
        table = self.manifest()
        counts = status_counts(table)
        self._loc.remove_partials(MANIFEST)
        self._loc.put_atomic(MANIFEST, to_parquet_bytes(table))
        self._base = table
        if self._group is None:
            self._group = zarr.open_group(self._loc.zarr_store, mode="r+", zarr_format=3)
        self._group.attrs.update({"counts": counts})
        self._attrs = {**self._attrs, "counts": counts}

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        if self._readers:
            for r in self._readers.values():
                r.close()
        self._readers = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __getstate__(self) -> dict:
        """Pickles as (url, storage_options, attributes): open files and caches stay behind (loader workers)."""
        return {"url": self.url, "storage_options": self._loc.storage_options, "attrs": self._attrs}

    def __setstate__(self, state: dict) -> None:
        self.__init__(Location(state["url"], state["storage_options"]), state["attrs"])

    def __repr__(self) -> str:
        return (
            f"FeatureStore({self.url!r}, rows={self.num_rows}, shards={self.num_shards}x{self.shard_size}, "
            f"dtype={self.dtype}, clip={self.clip_shape}, moge={self.moge_shape})"
        )


def _check_shape(name: str, shape, ndim: int) -> tuple[int, ...]:
    try:
        out = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        out = ()
    if len(out) != ndim or min(out) < 1:
        raise SgeoError(f"{name} must be {ndim} positive sizes, got {shape!r}")
    return out
