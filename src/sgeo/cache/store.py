"""FeatureStore: create, resume, write shards of, and read a Zarr v3 store of named feature arrays.

One store holds the encoder outputs of one image set under one encoder fingerprint and one encoding
(layout.py), one array per name (e.g. one vision tower's features, or `clip` and `moge`), in a fixed
order. Rows are fixed at `create`; writers own disjoint shard-aligned row ranges, write each shard with one
assignment per array (one object each), then the commit marker, last. Only committed shards count.
The marker records the sha256 of the shard and of every row; every row a reader returns has been
checked against it (a flipped byte is refused naming the file, never trained on).

The class is the store's state (attributes, caches of markers and manifest) and its geometry; the jobs around
it live beside it: create.py (a fresh store), resume.py (reopening one to resume), writing.py (a shard's checked
contents), reading.py (rows back, each checked by integrity.py), meta.py (the root's attributes).

Reading a store without sgeo: see README ("Reading a store without sgeo").
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import zarr

from sgeo.cache import layout
from sgeo.cache.create import create_store
from sgeo.cache.fingerprint import check_fingerprint
from sgeo.cache.layout import ARRAY_CONFIG, MANIFEST, StoreMismatchError
from sgeo.cache.location import Location
from sgeo.cache.manifest import (
    from_parquet_bytes,
    initial_table,
    marker_bytes,
    merge,
    parse_marker,
    status_counts,
    to_parquet_bytes,
)
from sgeo.cache.meta import check_readable, marker_names, read_group_attrs
from sgeo.cache.reading import READ_THREADS, StoreReader
from sgeo.cache.writing import shard_contents
from sgeo.errors import SgeoError, one_line


class FeatureStore:
    """A Zarr v3 group of named feature arrays (N, *shape), e.g. clip (N, T, Dc), a manifest, commit markers."""

    def __init__(self, loc: Location, attrs: dict, check_digests: bool = True,
                 read_threads: int = READ_THREADS, shard_reader: bool = True):  # fmt: skip
        """A store at `loc` whose group attributes are `attrs` (refused when this sgeo cannot read them).
        check_digests: every row read is checked against its sha256. shard_reader=False: rows are read
        through zarr, never straight from the shard objects (the independent path; `verify` reads so too)."""
        check_readable(loc.url, attrs)
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
        self.check_digests, self.read_threads, self.shard_reader = check_digests, read_threads, shard_reader
        self._group = None
        self._arrays: dict = {}
        self._reader = StoreReader(self, check_digests=check_digests, read_threads=read_threads,
                                   shard_reader=shard_reader)  # fmt: skip
        self._committed: set[int] | None = None
        self._markers: dict[int, dict] = {}
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
    def open(cls, url: str, *, expect_fingerprint: dict | None = None, expect_encoding: str | None = None,
             storage_options: dict | None = None, check_digests: bool = True, read_threads: int = READ_THREADS,
             shard_reader: bool = True) -> FeatureStore:  # fmt: skip
        """Open an existing store; refuse one made by other encoders (expect_fingerprint) or stored in
        another encoding (expect_encoding). check_digests, shard_reader: see __init__."""
        loc = Location(url, storage_options)
        attrs = read_group_attrs(loc)
        if attrs is None:
            raise SgeoError(
                f"no feature store at {loc.url} (no zarr.json); run `sgeo extract` or check the store path"
            )
        if "sgeo_schema_version" not in attrs:
            raise SgeoError(f"{loc.url} is a zarr node but not an sgeo feature store; check the store path")
        if not loc.exists(MANIFEST):
            raise SgeoError(
                f"store {loc.url} is incomplete (no manifest.parquet); rerun extract to create it"
            )
        store = cls(
            loc, attrs, check_digests=check_digests, read_threads=read_threads, shard_reader=shard_reader
        )
        if expect_encoding is not None and store.dtype != layout.encoding(expect_encoding).name:
            raise StoreMismatchError(
                f"store {store.url} is encoded as {store.dtype}, not {expect_encoding}; "
                f"read it as {store.dtype} or extract a {expect_encoding} store"
            )
        if expect_fingerprint is not None:
            check_fingerprint(store.url, store.fingerprint, expect_fingerprint)
        return store

    # ---------------------------------------------------------------- shard geometry (layout.py's rules)

    def shard_of(self, row: int) -> int:
        """The shard that holds `row`."""
        return row // self.shard_size

    def shard_key(self, name: str, k: int) -> str:
        """Key of shard k's object of array `name`, relative to the store root."""
        return layout.shard_key(name, k, self.stored_shapes[name])

    def shard_nbytes(self, k: int, name: str) -> int | None:
        """Exact size of shard k's object of array `name`; None when compressed (it depends on the data)."""
        if self.encoding.blosc is not None:
            return None
        row_nbytes = self.encoding.stored_row_nbytes(self.stored_shapes[name])
        return layout.shard_nbytes_uncompressed(len(self.shard_rows(k)), row_nbytes, self.shard_size)

    def shard_size_problem(self, k: int, name: str, size: int | None) -> str | None:
        """What is wrong with the size (`size` bytes, None when missing) of committed shard k's object of
        array `name`, or None when it may be sound."""
        return layout.shard_size_problem(
            name, k, self.shard_key(name, k), size, self.shard_nbytes(k, name), self.shard_size
        )

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
        words, recs, digests = shard_contents(self, rows, arrays, records)
        ids = self.image_ids()[rows.start : rows.stop]
        marker = layout.marker_key(k)
        self._loc.remove_partials(marker)
        self._loc.rm(marker)  # a rewrite un-commits first: a marker never covers half-written arrays
        if self._committed is not None:
            self._committed.discard(k)
        self._markers.pop(k, None)
        self._reader.forget(k)
        self._write_arrays(k, words)
        self._loc.put_atomic(marker, marker_bytes(k, rows, ids, recs, digests))
        if self._committed is not None:
            self._committed.add(k)

    def check_names(self, names, *, exact: bool) -> None:
        """Refuse names that are not this store's arrays (exact: and every array of the store, for a write)."""
        layout.check_names_held(self.url, list(self.shapes), names, exact=exact)

    def zarr_array(self, name: str):
        """The zarr array `name`, opened once (read-write: `write_shard` assigns through it)."""
        if name not in self._arrays:
            # open_array ignores `config`: the runtime config is set with with_config
            arr = zarr.open_array(self._loc.zarr_store, path=name, mode="r+", zarr_format=3)
            self._arrays[name] = arr.with_config(ARRAY_CONFIG)
        return self._arrays[name]

    def _write_arrays(self, k: int, arrays: dict[str, np.ndarray]) -> None:
        """The array half of write_shard: one assignment per array, exactly one shard object each."""
        rows = self.shard_rows(k)
        for name, data in arrays.items():
            key = self.shard_key(name, k)
            self._loc.rm(key)  # a stale object from a killed run would be read back and merged
            self._loc.remove_partials(key)
            self.zarr_array(name)[rows.start : rows.stop] = data

    # ---------------------------------------------------------------- reading

    def read(
        self, rows: np.ndarray | list[int] | slice | int, *, arrays: list[str] | tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """Stored words of rows, in the order asked: {name: [n, *stored_shapes[name]]} for every array in the
        store's order, or for `arrays` in their order (decode them with `sgeo.pipeline.features.decode(words,
        store.dtype)`). An int row gives arrays without the leading axis. Rows must be in committed shards;
        each row is checked against its sha256."""
        return self._reader.read(rows, arrays)

    def read_into(self, idx: list[int], out: dict[str, np.ndarray], verify) -> None:
        """Fill `out[name]` (one array per stored array) with rows `idx`; `verify(name, row, words)` or None."""
        self._reader.read_into(idx, out, verify)

    def reads_shards(self) -> bool:
        """True when rows are read straight from the shard objects (one read each), False through zarr."""
        return self._reader.shard_readers() is not None

    def require_committed(self, shards: set[int]) -> None:
        """Refuse, in one line, to read rows of shards that have no commit marker."""
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
                raise self.manifest_error(one_line(f"{type(e).__name__}: {e}", 200)) from None
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
        got = self._loc.cat_many([layout.marker_key(k) for k in todo])
        for k in todo:
            self._markers[k] = parse_marker(got[layout.marker_key(k)], k, self.shapes)
        return self._markers

    def manifest(self) -> pa.Table:
        """One row per image, statuses from the commit markers (rows of uncommitted shards are "pending")."""
        return merge(self.base_table(), self.load_markers())

    def image_ids(self) -> list[str]:
        """Every row's image id, in row order."""
        if self._ids is None:
            self._ids = self.base_table().column("image_id").to_pylist()
        return self._ids

    def markers_of(self, shards: list[int]) -> dict[int, dict]:
        """The parsed commit markers of these committed shards; those not read yet are read in one batch. A
        marker that vanished meanwhile is one line (a writer or a repair is busy)."""
        keys = {k: layout.marker_key(k) for k in shards if k not in self._markers}
        try:
            got = self._loc.cat_many(list(keys.values()))
        except FileNotFoundError:
            self._committed = None
            raise SgeoError(
                f"store {self.url}: a commit marker vanished while reading; is a writer (or a repair) busy?"
            ) from None
        for k, key in keys.items():
            self._markers[k] = parse_marker(got[key], k, self.shapes)
        return {k: self._markers[k] for k in shards}

    def marker(self, k: int) -> dict:
        """The parsed commit marker of committed shard k (read once per store object)."""
        if k not in self._markers:
            self.require_committed({k})
            self._markers[k] = parse_marker(self._loc.cat(layout.marker_key(k)), k, self.shapes)
        return self._markers[k]

    def forget(self, shards: list[int]) -> None:
        """Drop what this object cached of these shards (markers, digests, indexes): another process has
        rewritten them, and the next read or `finalize` must see their new markers."""
        for k in shards:
            self._markers.pop(k, None)
            self._reader.forget(k)
        self._committed = None

    def rewrite_manifest(self, image_ids: list[str], paths: list[str]) -> None:
        """Write manifest.parquet afresh from this image list (all rows pending: statuses come from the
        markers) and forget the one read before."""
        self._loc.put_atomic(MANIFEST, to_parquet_bytes(initial_table(image_ids, paths)))
        self._base, self._ids = None, None

    def uncommit(self, shards: list[int]) -> None:
        """Drop the commit markers of these shards (their rows become pending; a rerun of extract redoes
        them). The writer must hold the store's lock."""
        for k in shards:
            self._loc.rm(layout.marker_key(k))
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
        self._reader.close()

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
                "check_digests": self.check_digests, "read_threads": self.read_threads,
                "shard_reader": self.shard_reader}  # fmt: skip

    def __setstate__(self, state: dict) -> None:
        self.__init__(Location(state["url"], state["storage_options"]), state["attrs"],
                      state.get("check_digests", True), state.get("read_threads", READ_THREADS),
                      state.get("shard_reader", True))  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"FeatureStore({self.url!r}, rows={self.num_rows}, shards={self.num_shards}x{self.shard_size}, "
            f"dtype={self.dtype}, "
            + ", ".join(f"{name}={shape}" for name, shape in self.shapes.items())
            + ")"
        )
