"""Where a store lives: a local directory or any fsspec URL, with the few byte operations the store needs.

Local paths (and file:// URLs) use zarr's LocalStore and plain os calls; everything else (s3://,
memory://, gs://, ...) uses zarr's FsspecStore and an fsspec filesystem built from the same
storage_options. `put_atomic` writes to a temp name and renames on local disk; on object storage a
single PUT is already atomic.

Two rules about where stores may live and what a full disk means are here too: `check_shared` (a store that
other processes must write, as extract's workers do, needs a filesystem they share) and `disk_full` (a
write that fails for want of space is one line saying so, never a traceback).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem
from zarr.storage import FsspecStore, LocalStore

from sgeo import atomic
from sgeo.errors import SgeoError

# fsspec protocols whose files live inside one process: what one process writes there, no other sees.
PROCESS_LOCAL = ("memory",)
# errno values of a write that failed for want of space: the disk, the user's quota, the file size limit
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def check_shared(url: str | os.PathLike, option: str = "--store") -> None:
    """Refuse a store URL whose filesystem is private to this process (memory://, also inside a chained
    URL such as simplecache::memory://): a job whose workers write the store needs one they all reach."""
    url = os.fspath(url)
    protocols = [part.split("://", 1)[0].lower() for part in url.split("::") if "://" in part]
    local = next((p for p in protocols if p in PROCESS_LOCAL), None)
    if local is not None:
        raise SgeoError(
            f"{option} {url}: {local}:// keeps files in one process's memory, which the job's worker "
            "processes cannot see; use a local path (or file://), s3://, or another filesystem every process "
            "reaches (gs://, az://, ...)"
        )


@contextlib.contextmanager
def disk_full(url: str | os.PathLike):
    """Turn a write that failed because the disk holding store `url` is full (or a quota or the file size
    limit is reached) into one SgeoError line saying so; any other error passes unchanged."""
    try:
        yield
    except SgeoError:
        raise
    except Exception as error:
        full = _no_space(error)
        if full is None:
            raise
        where = full.filename or normalize_url(url)
        raise SgeoError(
            f"the disk is full: writing {where} failed ({os.strerror(full.errno)}); free space there (or raise "
            "the quota) and rerun the same command: it resumes, keeping what is already committed"
        ) from None


def _no_space(error: BaseException) -> OSError | None:
    """The out-of-space OSError in an exception's chain (zarr and asyncio may wrap it), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in NO_SPACE:
            return error
        error = error.__cause__ or error.__context__
    return None


def normalize_url(url: str | os.PathLike) -> str:
    """Absolute local path for local stores, the URL unchanged otherwise."""
    url = os.fspath(url)
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        return os.path.abspath(os.path.expanduser(url))
    return url.rstrip("/")


class Location:
    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        self.url = normalize_url(url)
        self.storage_options = dict(storage_options or {})
        self.local = "://" not in self.url
        if self.local:
            self.fs = LocalFileSystem()
            self.root = self.url
        else:
            try:
                self.fs, self.root = fsspec.core.url_to_fs(
                    self.url, **_read_options(self.url, self.storage_options)
                )
            except (ImportError, ValueError) as e:
                raise SgeoError(f"cannot open store URL {self.url}: {e}") from e
            self.root = self.root.rstrip("/")
        self._zarr_store = None

    @property
    def zarr_store(self):
        if self._zarr_store is None:
            if self.local:
                self._zarr_store = LocalStore(self.root)
            else:
                self._zarr_store = FsspecStore.from_url(self.url, storage_options=self.storage_options)
        return self._zarr_store

    def check_not_file(self) -> None:
        """Refuse a store URL that names a file (a typo for a directory, usually)."""
        is_file = os.path.isfile(self.root) if self.local else self.fs.isfile(self.root)
        if is_file:
            raise SgeoError(
                f"{self.url} is a file, not a feature store directory; give the store's directory"
            )

    def path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def exists(self, key: str) -> bool:
        if self.local:
            return os.path.exists(self.path(key))
        return self.fs.exists(self.path(key))

    def cat(self, key: str) -> bytes:
        if self.local:
            return Path(self.path(key)).read_bytes()
        return self.fs.cat_file(self.path(key))

    def cat_many(self, keys: list[str]) -> dict[str, bytes]:
        """Read several small objects (concurrently on object storage)."""
        if not keys:
            return {}
        if self.local:
            return {k: Path(self.path(k)).read_bytes() for k in keys}
        paths = [self.path(k) for k in keys]
        got = self.fs.cat(paths, on_error="raise")
        return {
            k: got[p] if p in got else got[self.fs._strip_protocol(p)]
            for k, p in zip(keys, paths, strict=True)
        }

    def put_atomic(self, key: str, data: bytes) -> None:
        path = self.path(key)
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic.write_bytes(path, data)
        else:
            self.fs.pipe_file(path, data)

    def rm(self, key: str) -> None:
        """Remove one object if it exists."""
        try:
            if self.local:
                os.unlink(self.path(key))
            else:
                self.fs.rm_file(self.path(key))
        except FileNotFoundError:
            pass

    def listdir(self, key: str) -> list[str]:
        """Base names in a directory/prefix; empty when it does not exist. Never served from a listing cache."""
        path = self.path(key)
        if self.local:
            try:
                return sorted(os.listdir(path))
            except FileNotFoundError:
                return []
        self.fs.invalidate_cache(path)
        try:
            names = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted(n.rstrip("/").rsplit("/", 1)[-1] for n in names)

    def rm_tree(self, key: str) -> None:
        """Remove a directory/prefix and everything below it, if it exists."""
        path = self.path(key)
        if self.local:
            shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)
            return
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)

    def remove_partials(self, key: str) -> None:
        """Local disk only: drop temp files a killed zarr write left next to `key` (`<key>.<hex>.partial`)."""
        if not self.local:
            return
        parent, base = os.path.split(self.path(key))
        try:
            names = os.listdir(parent)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(base + ".") and name.endswith((".partial", ".tmp")):
                os.unlink(os.path.join(parent, name))

    def files(self) -> dict[str, int]:
        """Relative key -> size of every object under the root."""
        if self.local:
            out = {}
            for dirpath, _, names in os.walk(self.root):
                for name in names:
                    p = os.path.join(dirpath, name)
                    out[os.path.relpath(p, self.root).replace(os.sep, "/")] = os.path.getsize(p)
            return out
        self.fs.invalidate_cache(self.root)
        found = self.fs.find(self.root, detail=True)
        prefix = len(self.root) + 1
        return {p[prefix:]: int(info.get("size") or 0) for p, info in found.items()}


S3_POOL_CONNECTIONS = 64  # botocore's default of 10 caps concurrent ranged GETs (and so random-read MB/s)


def _read_options(url: str, storage_options: dict) -> dict:
    """The filesystem options for sgeo's own reads: on s3, a connection pool wide enough for a batch."""
    if not url.startswith(("s3://", "s3a://")):
        return storage_options
    config = dict(storage_options.get("config_kwargs") or {})
    config.setdefault("max_pool_connections", S3_POOL_CONNECTIONS)
    return {**storage_options, "config_kwargs": config}
