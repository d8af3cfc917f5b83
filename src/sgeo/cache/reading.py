"""The read side of one FeatureStore: rows in any order, each checked against its sha256 (integrity.py).

Rows are read straight from the shard objects (shards.py) when every array's metadata is exactly what
`create` writes; otherwise, or when the store was opened with `shard_reader=False`, through zarr. The reads of
one call run in a thread pool of `read_threads`, one per process (a forked loader worker starts its own).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sgeo.cache.integrity import RowChecker
from sgeo.cache.layout import GROUP_META
from sgeo.cache.shards import ShardReader, read_rows
from sgeo.errors import SgeoError

READ_THREADS = 8  # concurrent row reads and decodes per store (per loader worker)
# the chunk key encoding `create` writes: the shard reader finds objects by these keys (layout.shard_key)
DEFAULT_KEYS = {"name": "default", "configuration": {"separator": "/"}}


class StoreReader:
    """Reads rows of `store` (its public API only); holds the shard readers, the thread pool, the checker."""

    def __init__(self, store, *, check_digests: bool, read_threads: int, shard_reader: bool):
        self.store, self.check_digests, self.read_threads = store, check_digests, read_threads
        self.checker = RowChecker(store)
        self._use_shards = shard_reader
        # None: not looked at yet; {}: read through zarr
        self._readers: dict[str, ShardReader] | None = None if shard_reader else {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_pid != os.getpid():  # a forked loader worker starts its own
            self._pool = ThreadPoolExecutor(max(1, self.read_threads), thread_name_prefix="sgeo-read")
            self._pool_pid = os.getpid()
        return self._pool

    def shard_readers(self) -> dict[str, ShardReader] | None:
        """Shard readers when every array has exactly the codecs `create` writes; else None (zarr reads)."""
        store = self.store
        if self._readers is None:
            readers = {}
            for name, stored in store.stored_shapes.items():
                try:
                    meta = json.loads(store.location.cat(f"{name}/{GROUP_META}"))
                except FileNotFoundError:
                    raise SgeoError(
                        f"store {store.url} has no {name} array; it is damaged, re-extract it"
                    ) from None
                if (
                    meta.get("codecs") != store.encoding.expected_codecs(stored)
                    or meta.get("chunk_key_encoding") != DEFAULT_KEYS
                ):
                    readers = {}
                    break
                readers[name] = ShardReader(store.location, name, stored, store.encoding, store.shard_size)
            self._readers = readers
        return self._readers or None

    def read(self, rows, arrays) -> dict[str, np.ndarray]:
        """See FeatureStore.read."""
        store = self.store
        if isinstance(arrays, str):
            arrays = [arrays]
        if arrays is not None:
            store.check_names(arrays, exact=False)
        names = list(store.shapes) if arrays is None else list(dict.fromkeys(arrays))
        single = isinstance(rows, (int, np.integer))
        if single:
            idx = [int(rows)]
        elif isinstance(rows, slice):
            idx = list(range(store.num_rows)[rows])
        else:
            arr = np.asarray(rows, dtype=np.int64)
            if arr.ndim != 1:
                raise SgeoError(f"rows must be one-dimensional, got shape {arr.shape}")
            idx = arr.tolist()
        if idx and (min(idx) < 0 or max(idx) >= store.num_rows):
            raise IndexError(f"rows out of range 0..{store.num_rows - 1} of store {store.url}")
        store.require_committed({store.shard_of(r) for r in idx})
        out = {name: np.empty((len(idx), *store.stored_shapes[name]), store.encoding.words) for name in names}
        self.read_into(idx, out, self.checker.verifier(idx) if self.check_digests and idx else None)
        return {name: words[0] for name, words in out.items()} if single else out

    def read_into(self, idx: list[int], out: dict[str, np.ndarray], verify) -> None:
        """Fill `out[name]` (one array per stored array) with rows `idx`; `verify(name, row, words)` or None."""
        readers = self.shard_readers()
        if readers:
            read_rows(
                self.store.location,
                [(readers[name], idx, out[name]) for name in out],
                self._thread_pool(),
                verify,
            )
        elif idx:
            for name in out:
                out[name][...] = self.store.zarr_array(name).oindex[np.asarray(idx)]
                for i, row in enumerate(idx) if verify is not None else ():
                    verify(name, row, out[name][i])

    def forget(self, k: int) -> None:
        """Drop what was cached of shard k (its row digests, its index and open file)."""
        self.checker.forget(k)
        for reader in (self._readers or {}).values():
            reader.forget(k)

    def close(self) -> None:
        for reader in (self._readers or {}).values():
            reader.close()
        self._readers = None if self._use_shards else {}  # looked at again on the next read
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False)
        self._pool = None
