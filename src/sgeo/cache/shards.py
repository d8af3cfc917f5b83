"""Reading rows straight from Zarr v3 shard objects: one positioned (local) or ranged (remote) read per row.

A zarr `__getitem__` costs about 1 ms of Python and event-loop overhead, more than reading a 1 MB row from
page cache, and a training loader reads a few images at a time; so each shard's index (the sharding
codec's (offset, nbytes) table at the end of the object) is read once and then every row is one read of
exactly its bytes. The reads of one call run concurrently: on local disk as `os.preadv` in a thread pool
(deep queues for cold NVMe), on object storage as one `cat_ranges` batch (fsspec issues the ranged GETs
concurrently, so per-request latency is paid once per batch, not once per row). Compressed rows are
decoded in the same thread pool (blosc releases the GIL). Used only when the array metadata is exactly
what the store writes (`Encoding.expected_codecs`); otherwise the store reads through zarr.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import Executor, wait

import google_crc32c  # zarr's own dependency, for the shard index checksum
import numpy as np

from sgeo.cache import layout
from sgeo.cache.layout import Encoding
from sgeo.cache.location import Location
from sgeo.errors import SgeoError

MAX_OPEN_FILES = 64  # per array, kept between calls (least recently used closed first)


def damaged(url: str, what: str) -> SgeoError:
    """The one-line error for a damaged committed shard, with the repair commands."""
    return SgeoError(
        f"store {url}: {what}; see `sgeo cache verify {url}`, drop the damaged shards with "
        f"`sgeo cache verify --repair {url}` and rerun extract to redo them"
    )


class ShardReader:
    """Rows of one sharded array of a store, read from its shard objects."""

    def __init__(
        self, loc: Location, name: str, stored_shape: tuple[int, ...], enc: Encoding, shard_size: int
    ):
        self.loc, self.name, self.stored_shape, self.enc = loc, name, tuple(stored_shape), enc
        self.shard_size = shard_size
        self.row_bytes = enc.stored_row_nbytes(self.stored_shape)
        self.index_bytes = layout.index_nbytes(shard_size)
        self._blosc = None
        if enc.blosc is not None:
            from numcodecs import Blosc

            self._blosc = Blosc()  # decoding reads the codec settings from each chunk's header
        self._index: dict[int, list[tuple[int, int]]] = {}
        self._fds: OrderedDict[int, int] = OrderedDict()

    def key(self, k: int) -> str:
        return layout.shard_key(self.name, k, self.stored_shape)

    def _damaged(self, k: int, what: str) -> SgeoError:
        return damaged(self.loc.url, f"{self.name} shard {k} ({self.key(k)}) {what}")

    # ---------------------------------------------------------------- shard indexes

    def _fd(self, k: int) -> int:
        fd = self._fds.get(k)
        if fd is None:
            try:
                fd = os.open(self.loc.path(self.key(k)), os.O_RDONLY)
            except FileNotFoundError:
                raise self._damaged(k, "is missing although committed") from None
            except IsADirectoryError:
                raise self._damaged(k, "is a directory, not a shard file") from None
            self._fds[k] = fd
        else:
            self._fds.move_to_end(k)
        return fd

    def trim(self) -> None:
        """Close the least recently used shard files past MAX_OPEN_FILES."""
        while len(self._fds) > MAX_OPEN_FILES:
            os.close(self._fds.popitem(last=False)[1])

    def _parse_index(self, k: int, raw: bytes) -> list[tuple[int, int]]:
        n = self.index_bytes
        if len(raw) != n:
            raise self._damaged(k, "is truncated")
        if google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise self._damaged(k, "has a corrupt index (checksum mismatch)")
        idx = [tuple(e) for e in np.frombuffer(raw[:-4], dtype="<u8").reshape(self.shard_size, 2).tolist()]
        self._index[k] = idx  # [(offset, nbytes)] per inner chunk, as Python ints: cheap per-row lookups
        return idx

    def _load_local_index(self, k: int) -> None:
        fd, n = self._fd(k), self.index_bytes
        size = os.fstat(fd).st_size
        self._parse_index(k, os.pread(fd, n, size - n) if size >= n else b"")

    def missing_indexes(self, shards) -> list[int]:
        return [k for k in sorted(set(shards)) if k not in self._index]

    def index_request(self, k: int) -> tuple[str, int, None]:
        return self.loc.path(self.key(k)), -self.index_bytes, None

    def set_remote_index(self, k: int, data) -> None:
        if isinstance(data, FileNotFoundError):
            raise self._damaged(k, "is missing although committed")
        if isinstance(data, BaseException):
            raise data
        self._parse_index(k, data)

    # ---------------------------------------------------------------- rows

    def plan(self, rows: list[int], out: np.ndarray, verify) -> list[tuple]:
        """(reader, out row, shard, offset, nbytes, row) per row to fetch; empty chunks are zero-filled here."""
        flat = out.reshape(len(rows), -1).view(np.uint8)  # [n, row_bytes]
        if self.loc.local:
            for k in {row // self.shard_size for row in rows} - set(self._index):
                self._load_local_index(k)
        todo = []
        for i, row in enumerate(rows):
            k, j = divmod(row, self.shard_size)
            offset, nbytes = self._index[k][j]
            if offset == layout.EMPTY_CHUNK and nbytes == layout.EMPTY_CHUNK:
                flat[i] = 0
                if verify is not None:
                    verify(self.name, row, flat[i])
                continue
            if self._blosc is None and nbytes != self.row_bytes:
                raise self._damaged(k, f"holds {nbytes} bytes for row {row}, expected {self.row_bytes}")
            if self.loc.local:
                self._fd(k)  # opened here, on the calling thread; tasks only read
            todo.append((self, flat[i], k, offset, nbytes, row))
        return todo

    def read_local(self, dest: np.ndarray, k: int, offset: int, nbytes: int, row: int, verify) -> None:
        fd = self._fds[k]
        if self._blosc is None:
            if os.preadv(fd, [memoryview(dest)], offset) != nbytes:
                raise self._damaged(k, "is truncated")
        else:
            self.decode(os.pread(fd, nbytes, offset), dest, k)
        if verify is not None:  # here, while the row is still in this core's cache
            verify(self.name, row, dest)

    def fill(self, dest: np.ndarray, k: int, data, nbytes: int, row: int, verify) -> None:
        """Put fetched bytes of one row into dest (decoding them if compressed), then check them."""
        if isinstance(data, FileNotFoundError):
            raise self._damaged(k, "is missing although committed")
        if isinstance(data, BaseException):
            raise data
        if len(data) != nbytes:
            raise self._damaged(k, "is truncated")
        if self._blosc is None:
            dest[:] = np.frombuffer(data, dtype=np.uint8)
        else:
            self.decode(data, dest, k)
        if verify is not None:
            verify(self.name, row, dest)

    def decode(self, data: bytes, dest: np.ndarray, k: int) -> None:
        try:
            self._blosc.decode(data, out=dest)
        except (RuntimeError, ValueError, TypeError) as e:
            raise self._damaged(k, f"does not decompress ({e})") from e

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


def read_rows(loc: Location, jobs: list[tuple[ShardReader, list[int], np.ndarray]], pool: Executor,
              verify=None) -> None:  # fmt: skip
    """Fill every `out` with its reader's `rows`: all reads of all arrays of one call run concurrently.

    verify(array name, row, row bytes) is called on every row as soon as it is in memory (in its task)."""
    if not loc.local:
        wanted = [
            (r, k) for r, rows, _ in jobs for k in r.missing_indexes(row // r.shard_size for row in rows)
        ]
        if wanted:
            requests = [r.index_request(k) for r, k in wanted]
            got = loc.fs.cat_ranges(*map(list, zip(*requests, strict=True)), on_error="return")
            for (r, k), data in zip(wanted, got, strict=True):
                r.set_remote_index(k, data)
    todo = [task for r, rows, out in jobs for task in r.plan(rows, out, verify)]
    try:
        if loc.local:
            run_all(pool, [(r.read_local, dest, k, off, n, row, verify) for r, dest, k, off, n, row in todo])
        elif todo:
            paths = [r.loc.path(r.key(k)) for r, _, k, _, _, _ in todo]
            starts = [off for _, _, _, off, _, _ in todo]
            ends = [off + n for _, _, _, off, n, _ in todo]
            got = loc.fs.cat_ranges(paths, starts, ends, on_error="return")
            calls = [
                (r.fill, dest, k, data, n, row, verify)
                for (r, dest, k, _, n, row), data in zip(todo, got, strict=True)
            ]
            run_all(pool, calls)
    finally:
        for r, _, _ in jobs:
            r.trim()


def run_all(pool: Executor, calls: list[tuple]) -> None:
    """Run fn(*args) for every call (fn, *args), several at once in the pool; all finish, then the first error is raised
    (so no task still reads from a file the caller closes)."""
    if len(calls) <= 2:
        for fn, *args in calls:
            fn(*args)
        return
    futures = [pool.submit(fn, *args) for fn, *args in calls]
    wait(futures)
    for future in futures:
        future.result()
