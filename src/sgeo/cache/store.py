"""FeatureStore: create, resume, write shards of, and read a Zarr v3 store of named feature arrays.

One store holds the encoder outputs of one image set under one encoder fingerprint and one encoding
(layout.py), one array per name (e.g. one vision tower's features, or `clip` and `moge`), in a fixed
order. Rows are fixed at `create`; writers own disjoint shard-aligned row ranges, write each shard with one
assignment per array (one object each), then the commit marker, last. Only committed shards count.
The marker records the sha256 of the shard and of every row; every row a reader returns has been
checked against it (a flipped byte is refused naming the file, never trained on).

Reading a store without sgeo: see README ("Reading a store without sgeo").
"""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import zarr

from sgeo.cache import layout
from sgeo.cache.create import ARRAY_CONFIG, create_store, marker_names, read_group_attrs
from sgeo.cache.fingerprint import check_fingerprint
from sgeo.cache.integrity import RowChecker, sha256
from sgeo.cache.layout import COMMITS, GROUP_META, MANIFEST, StoreMismatchError
from sgeo.cache.location import Location
from sgeo.cache.manifest import (
    from_parquet_bytes,
    marker_bytes,
    merge,
    normalize_records,
    parse_marker,
    status_counts,
    to_parquet_bytes,
)
from sgeo.cache.shards import ShardReader, read_rows
from sgeo.errors import SgeoError

READ_THREADS = 8  # concurrent row reads and decodes per store (per loader worker)


class FeatureStore:
    """A Zarr v3 group of named feature arrays (N, *shape), e.g. clip (N, T, Dc), a manifest, commit markers."""

    def __init__(
        self, loc: Location, attrs: dict, check_digests: bool = True, read_threads: int = READ_THREADS
    ):
        self._loc = loc
        self._attrs = attrs
        self.url: str = loc.url
        self.num_rows: int = int(attrs["num_rows"])
        self.shard_size: int = int(attrs["shard_size"])
        self.num_shards: int = int(attrs["num_shards"])
        self.dtype: str = attrs["dtype"]  # the encoding's name (bf16, fp16, bf16-zstd, fp8)
        self.encoding = layout.encoding(self.dtype)
        self.fingerprint: dict = attrs["fingerprint"]
        self.fingerprint_digest: str = attrs["fingerprint_digest"]
        # {array name: feature shape per image}, in the store's order (e.g. clip (T, Dc), moge (L, T, Dm))
        self.shapes: dict[str, tuple[int, ...]] = layout.shapes_from_attrs(loc.url, attrs)
        self.stored_shapes = {name: self.encoding.stored_shape(shape) for name, shape in self.shapes.items()}
        self.check_digests, self.read_threads = check_digests, read_threads
        self._reset_caches()

    def _reset_caches(self) -> None:
        self._group = None
        self._arrays: dict = {}
        self._readers: dict[str, ShardReader] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._committed: set[int] | None = None
        self._markers: dict[int, dict] = {}
        self._checker = RowChecker(self)
        self._base: pa.Table | None = None
        self._ids: list[str] | None = None

    # ---------------------------------------------------------------- create / open

    @classmethod
    def create(cls, url: str, *, image_ids: list[str], paths: list[str], fingerprint: dict,
               shapes: dict[str, tuple[int, ...]], dtype: str = "bf16", shard_size: int = 64,
               attributes: dict | None = None, storage_options: dict | None = None) -> FeatureStore:  # fmt: skip
        """Create a store with every row pending; if the same store already exists there, reopen it to resume.

        shapes: {array name: feature shape per image (..., channels)}, one array per name, in this order
        (names: lower-case identifiers, layout.check_array_name). dtype: the store encoding
        (layout.ENCODINGS). "The same" means same fingerprint, encoding, array names (in order) and shapes,
        shard size and image ids (in order); anything else raises StoreMismatchError. Source paths may
        differ on resume (a moved dataset); the stored ones are kept. Call it once (the job driver, under
        `writer_lock`); parallel writers then `open` the store.
        """
        return create_store(cls, url, image_ids=image_ids, paths=paths, fingerprint=fingerprint,
                            shapes=shapes, dtype=dtype, shard_size=shard_size,
                            attributes=attributes, storage_options=storage_options)  # fmt: skip

    @classmethod
    def open(
        cls,
        url: str,
        *,
        expect_fingerprint: dict | None = None,
        expect_encoding: str | None = None,
        storage_options: dict | None = None,
        check_digests: bool = True,
        read_threads: int = READ_THREADS,
    ) -> FeatureStore:
        """Open an existing store; refuse one made by other encoders (expect_fingerprint) or stored in
        another encoding (expect_encoding). check_digests: every row read is checked against its sha256."""
        loc = Location(url, storage_options)
        attrs = read_group_attrs(loc)
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
        store = cls._from_attrs(loc, attrs, check_digests=check_digests, read_threads=read_threads)
        if expect_encoding is not None and store.dtype != layout.encoding(expect_encoding).name:
            raise StoreMismatchError(
                f"store {store.url} is encoded as {store.dtype}, not {expect_encoding}; "
                f"read it as {store.dtype} or extract a {expect_encoding} store"
            )
        if expect_fingerprint is not None:
            check_fingerprint(store.url, store.fingerprint, expect_fingerprint)
        return store

    @classmethod
    def _from_attrs(cls, loc: Location, attrs: dict, **options) -> FeatureStore:
        version = attrs.get("sgeo_schema_version")
        if version not in layout.READABLE_SCHEMA_VERSIONS:
            raise SgeoError(
                f"store {loc.url} has schema version {version}, this sgeo reads "
                f"{' and '.join(map(str, layout.READABLE_SCHEMA_VERSIONS))}; "
                "use the sgeo version that wrote it or re-extract"
            )
        if attrs.get("compressor") is not None:
            raise SgeoError(
                f"store {loc.url} uses the retired compressor option {attrs['compressor']!r}; "
                "re-extract it with --dtype bf16-zstd"
            )
        return cls(loc, attrs, **options)

    def shard_nbytes(self, k: int, name: str) -> int | None:
        """Exact size of shard k's object of array `name`; None when compressed (it depends on the data)."""
        if self.encoding.blosc is not None:
            return None
        row_nbytes = int(np.prod(self.stored_shapes[name])) * self.encoding.words.itemsize
        return layout.shard_nbytes_uncompressed(len(self.shard_rows(k)), row_nbytes, self.shard_size)

    # ---------------------------------------------------------------- properties and rows

    @property
    def attributes(self) -> dict:
        """All group attributes (store keys and the caller's extra attributes), as read at open."""
        return self._attrs

    @property
    def location(self) -> Location:
        return self._loc

    def shard_rows(self, k: int) -> range:
        if not 0 <= k < self.num_shards:
            raise SgeoError(
                f"shard {k} is out of range; store {self.url} has shards 0..{self.num_shards - 1}"
            )
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.num_rows))

    def committed_shards(self) -> set[int]:
        """Shards whose commit marker exists (listed fresh each call)."""
        done = {k for k in marker_names(self._loc).values() if k < self.num_shards}
        self._committed = done
        return set(done)

    def pending_shards(self) -> list[int]:
        done = self.committed_shards()
        return [k for k in range(self.num_shards) if k not in done]

    # ---------------------------------------------------------------- writing

    @property
    def array_names(self) -> list[str]:
        """The store's arrays, in order."""
        return list(self.shapes)

    def write_shard(self, k: int, arrays: dict[str, np.ndarray], records: list[dict]) -> None:
        """Write rows shard_rows(k): arrays first (one object each), then the commit marker.

        arrays: exactly the store's names, each [rows, *stored_shapes[name]] stored words of the store's
        encoding (`sgeo.pipeline.features.encode`). Rows whose record says "failed" are stored as zeros.
        """
        rows = self.shard_rows(k)
        if not isinstance(arrays, dict):
            raise SgeoError(f"write_shard takes {{array name: words}}, got {type(arrays).__name__}")
        self._check_names(arrays, exact=True)
        words = {
            name: self._check_array(name, arrays[name], (len(rows), *stored))
            for name, stored in self.stored_shapes.items()
        }
        recs = normalize_records(records, rows)
        failed = [i for i, r in enumerate(recs) if r["status"] == "failed"]
        if failed:
            for name in words:
                words[name] = words[name].copy()
                words[name][failed] = 0
        digests = {
            **{f"{name}_sha256": sha256(a) for name, a in words.items()},
            "row_sha256": {name: [sha256(r) for r in a] for name, a in words.items()},
        }
        ids = self.image_ids()[rows.start : rows.stop]
        marker = f"{COMMITS}/{layout.marker_name(k)}"
        self._loc.remove_partials(marker)
        self._loc.rm(marker)  # a rewrite un-commits first: a marker never covers half-written arrays
        if self._committed is not None:
            self._committed.discard(k)
        self._markers.pop(k, None)
        self._checker.forget(k)
        self._write_arrays(k, words)
        self._loc.put_atomic(marker, marker_bytes(k, rows, ids, recs, digests))
        if self._committed is not None:
            self._committed.add(k)

    def _check_names(self, names, *, exact: bool) -> None:
        """Refuse names that are not this store's arrays (exact: and every array of the store, for a write)."""
        unknown = [repr(n) for n in names if n not in self.shapes]
        missing = [repr(n) for n in self.shapes if n not in names] if exact else []
        if unknown or missing:
            got = "; ".join(
                ([f"no array {', '.join(unknown)} in the store"] if unknown else [])
                + ([f"array {', '.join(missing)} missing"] if missing else [])
            )
            todo = "pass exactly those names" if exact else "read some of those"
            raise SgeoError(f"store {self.url} holds arrays {', '.join(self.shapes)}: {got}; {todo}")

    def _check_array(self, name: str, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        a = np.asarray(a)
        if a.dtype != self.encoding.words:
            raise SgeoError(
                f"{name} is {a.dtype} but this {self.dtype} store takes {self.encoding.words} words; convert "
                f"with sgeo.pipeline.features.encode(tensor, {self.dtype!r})"
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
            self._arrays[name] = arr.with_config(ARRAY_CONFIG)
        return self._arrays[name]

    def _write_arrays(self, k: int, arrays: dict[str, np.ndarray]) -> None:
        """The array half of write_shard: one assignment per array, exactly one shard object each."""
        rows = self.shard_rows(k)
        for name, data in arrays.items():
            key = layout.shard_key(name, k, data.ndim)
            self._loc.rm(key)  # a stale object from a killed run would be read back and merged
            self._loc.remove_partials(key)
            if self._readers:
                self._readers[name].forget(k)
            self._array(name)[rows.start : rows.stop] = data

    # ---------------------------------------------------------------- reading

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_pid != os.getpid():  # a forked loader worker starts its own
            self._pool = ThreadPoolExecutor(max(1, self.read_threads), thread_name_prefix="sgeo-read")
            self._pool_pid = os.getpid()
        return self._pool

    def _readers_or_none(self) -> dict[str, ShardReader] | None:
        """Shard readers when every array has exactly the codecs `create` writes; else None (zarr reads)."""
        if self._readers is None:
            readers = {}
            for name, stored in self.stored_shapes.items():
                try:
                    meta = json.loads(self._loc.cat(f"{name}/{GROUP_META}"))
                except FileNotFoundError:
                    raise SgeoError(
                        f"store {self.url} has no {name} array; it is damaged, re-extract it"
                    ) from None
                if meta.get("codecs") != self.encoding.expected_codecs(stored) or meta.get(
                    "chunk_key_encoding"
                ) != {"name": "default", "configuration": {"separator": "/"}}:
                    readers = {}
                    break
                readers[name] = ShardReader(self._loc, name, stored, self.encoding, self.shard_size)
            self._readers = readers
        return self._readers or None

    def read(
        self, rows: np.ndarray | list[int] | slice | int, *, arrays: list[str] | tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """Stored words of rows, in the order asked: {name: [n, *stored_shapes[name]]} for every array in the
        store's order, or for `arrays` in their order (decode them with `sgeo.pipeline.features.decode(words,
        store.dtype)`). An int row gives arrays without the leading axis. Rows must be in committed shards;
        each row is checked against its sha256."""
        if isinstance(arrays, str):
            arrays = [arrays]
        if arrays is not None:
            self._check_names(arrays, exact=False)
        names = list(self.shapes) if arrays is None else list(dict.fromkeys(arrays))
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
        out = {name: np.empty((len(idx), *self.stored_shapes[name]), self.encoding.words) for name in names}
        self.read_into(idx, out, self._checker.verifier(idx) if self.check_digests and idx else None)
        return {name: words[0] for name, words in out.items()} if single else out

    def read_into(self, idx: list[int], out: dict[str, np.ndarray], verify) -> None:
        """Fill `out[name]` (one array per stored array) with rows `idx`; `verify(name, row, words)` or None."""
        readers = self._readers_or_none()
        if readers:
            read_rows(
                self._loc, [(readers[name], idx, out[name]) for name in out], self._thread_pool(), verify
            )
        elif idx:
            for name in out:
                out[name][...] = self._array(name).oindex[np.asarray(idx)]
                for i, row in enumerate(idx) if verify is not None else ():
                    verify(name, row, out[name][i])

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

    def manifest_error(self, why: str) -> SgeoError:
        """The error for a damaged manifest.parquet, saying `why` and how to rewrite it."""
        return SgeoError(
            f"store {self.url}: manifest.parquet is damaged ({why}); rerun the same `sgeo extract` to rewrite "
            f"it (committed shards are kept), or see `sgeo cache verify {self.url}`"
        )

    def base_table(self) -> pa.Table:
        """manifest.parquet as written at creation (statuses come from the commit markers), read once."""
        if self._base is None:
            try:
                self._base = from_parquet_bytes(self._loc.cat(MANIFEST))
            except FileNotFoundError:
                raise self.manifest_error("it is missing") from None
            except (OSError, ValueError, pa.ArrowException) as e:
                raise self.manifest_error(" ".join(f"{type(e).__name__}: {e}".split())[:200]) from None
            if self._base.num_rows != self.num_rows:
                n = self._base.num_rows
                self._base = None
                raise self.manifest_error(f"it has {n} rows but the arrays have {self.num_rows}")
        return self._base

    def load_markers(self) -> dict[int, dict]:
        """The parsed commit marker of every committed shard, by shard index (each read once)."""
        done = self.committed_shards()
        self._markers = {k: m for k, m in self._markers.items() if k in done}
        todo = sorted(done - set(self._markers))
        got = self._loc.cat_many([f"{COMMITS}/{layout.marker_name(k)}" for k in todo])
        for k in todo:
            self._markers[k] = parse_marker(got[f"{COMMITS}/{layout.marker_name(k)}"], k, self.shapes)
        return self._markers

    def manifest(self) -> pa.Table:
        """One row per image, statuses from the commit markers (rows of uncommitted shards are "pending")."""
        return merge(self.base_table(), self.load_markers())

    def image_ids(self) -> list[str]:
        """Every row's image id, in row order."""
        if self._ids is None:
            self._ids = self.base_table().column("image_id").to_pylist()
        return self._ids

    def marker(self, k: int) -> dict:
        """The parsed commit marker of committed shard k (read once per store object)."""
        if k not in self._markers:
            self._require_committed({k})
            self._markers[k] = parse_marker(
                self._loc.cat(f"{COMMITS}/{layout.marker_name(k)}"), k, self.shapes
            )
        return self._markers[k]

    def forget(self, shards: list[int]) -> None:
        """Drop what this object cached of these shards (markers, digests, indexes): another process has
        rewritten them, and the next read or `finalize` must see their new markers."""
        for k in shards:
            self._markers.pop(k, None)
            self._checker.forget(k)
            for reader in (self._readers or {}).values():
                reader.forget(k)
        self._committed = None

    def uncommit(self, shards: list[int]) -> None:
        """Drop the commit markers of these shards (their rows become pending; a rerun of extract redoes
        them). The writer must hold the store's lock."""
        for k in shards:
            self._loc.rm(f"{COMMITS}/{layout.marker_name(k)}")
        self.forget(shards)

    def finalize(self) -> None:
        """Rewrite manifest.parquet with the committed statuses and record the counts in the attributes. A
        store they already describe is not written (an extract that found it complete leaves it untouched)."""
        table = self.manifest()
        counts = status_counts(table)
        data = to_parquet_bytes(table)
        self._base = table
        if (
            self._attrs.get("counts") == counts
            and self._loc.exists(MANIFEST)
            and self._loc.cat(MANIFEST) == data
        ):
            return
        self._loc.remove_partials(MANIFEST)
        self._loc.put_atomic(MANIFEST, data)
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
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False)
        self._pool = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    def __getstate__(self) -> dict:
        """Pickles as (url, storage_options, attributes, read options): files, threads, caches stay behind."""
        return {"url": self.url, "storage_options": self._loc.storage_options, "attrs": self._attrs,
                "check_digests": self.check_digests, "read_threads": self.read_threads}  # fmt: skip

    def __setstate__(self, state: dict) -> None:
        self.__init__(Location(state["url"], state["storage_options"]), state["attrs"],
                      state.get("check_digests", True), state.get("read_threads", READ_THREADS))  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"FeatureStore({self.url!r}, rows={self.num_rows}, shards={self.num_shards}x{self.shard_size}, "
            f"dtype={self.dtype}, "
            + ", ".join(f"{name}={shape}" for name, shape in self.shapes.items())
            + ")"
        )
