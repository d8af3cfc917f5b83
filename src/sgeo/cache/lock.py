"""The writer lock of a store: one writing job at a time, and a record of who holds it.

`writer_lock(url)` is a context manager around a lock file beside the commit markers
(`<store>/commits/writer.lock`) holding JSON: host, pid, start time, command.

- Local disk: the file is `flock`ed while held, so the kernel releases it when its process dies however it
  dies; a lock file left by a dead process is simply taken over (its record rewritten). After locking, the
  path is checked to still name the locked file (a holder unlinks it on release).
- Object storage: the lock object is created with a conditional PUT (If-None-Match: *) where the store
  supports it (AWS S3 does), else written and read back to check that this writer's token won. A lock
  object of a dead process on this host is taken over; one of another host is reported with its holder
  (delete the object if that job is gone: object storage cannot tell a dead writer from a slow one).

A second writer waits up to `wait` seconds, then refuses with one line that says who holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
import uuid

import psutil

from sgeo.cache.layout import COMMITS, LOCK
from sgeo.cache.location import Location
from sgeo.errors import SgeoError

POLL_S = 0.5


def _record() -> dict:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "pid_started": psutil.Process(pid).create_time(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
        "token": uuid.uuid4().hex,
    }


def _alive_here(holder: dict) -> bool:
    """Whether the holder is a live process of this host (a reused pid does not count)."""
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: assume it runs
    try:
        proc = psutil.Process(int(holder["pid"]))
        return abs(proc.create_time() - float(holder.get("pid_started", 0))) < 1.0
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return False


def describe_holder(holder: dict | None) -> str:
    """Who holds a lock, in words, from its record (None: unreadable); the trainer's folder lock says it too."""
    if not holder:
        return "another writer (its lock record is unreadable)"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
        f"({holder.get('command') or 'unknown command'})"
    )


class StoreLock:
    """Held between `acquire` and `release` (or as a context manager); see the module docstring."""

    def __init__(self, url: str, storage_options: dict | None = None, *, wait: float = 0.0):
        self.loc = Location(url, storage_options)
        self.key = f"{COMMITS}/{LOCK}"
        self.wait = wait
        self.record: dict | None = None
        self._fd: int | None = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.loc.check_not_file()
        deadline = time.monotonic() + max(0.0, self.wait)
        while True:
            holder = self._try_local() if self.loc.local else self._try_remote()
            if holder is None:
                return
            if time.monotonic() >= deadline:
                raise SgeoError(
                    f"store {self.loc.url} is being written by {describe_holder(holder)}; wait for it to "
                    f"finish (or, if it is gone, delete {self.loc.url}/{self.key})"
                )
            time.sleep(POLL_S)

    # ---------------------------------------------------------------- local disk

    def _try_local(self) -> dict | None:
        """None when acquired, else the holder's record."""
        path = self.loc.path(self.key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except (NotADirectoryError, FileExistsError):
            raise SgeoError(f"{self.loc.url} is not a store directory; check the store path") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            data = os.pread(fd, 4096, 0)
            os.close(fd)
            return _parse(data) or {}
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the holder released (unlinked) it between our open and our flock: try again
            os.close(fd)
            return self._try_local()
        self.record = _record()
        data = json.dumps(self.record).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        self._fd = fd
        return None

    # ---------------------------------------------------------------- object storage

    def _try_remote(self) -> dict | None:
        path = self.loc.path(self.key)
        record = _record()
        data = json.dumps(record).encode()
        try:
            self.loc.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            pass
        except (TypeError, NotImplementedError, ValueError, OSError):
            # no conditional PUT here: write unless someone holds it, then check that our token won
            if not self.loc.fs.exists(path):
                self.loc.fs.pipe_file(path, data)
        else:
            self.record = record
            return None
        self.loc.fs.invalidate_cache(path)
        try:
            holder = _parse(self.loc.fs.cat_file(path))
        except FileNotFoundError:
            return self._try_remote()  # released meanwhile
        if holder and holder.get("token") == record["token"]:
            self.record = record
            return None
        if holder and not _alive_here(holder):
            self.loc.rm(self.key)  # a dead process of this host: take it over
            return self._try_remote()
        return holder or {}

    # ---------------------------------------------------------------- release

    def release(self) -> None:
        if self.record is None:
            return
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.loc.path(self.key))  # before unlocking: a waiter then re-opens a fresh file
            os.close(self._fd)
            self._fd = None
        else:
            with contextlib.suppress(FileNotFoundError, ValueError):
                holder = _parse(self.loc.fs.cat_file(self.loc.path(self.key)))
                if holder and holder.get("token") == self.record["token"]:
                    self.loc.rm(self.key)
        self.record = None


def _parse(data: bytes) -> dict | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def writer_lock(url: str, storage_options: dict | None = None, *, wait: float = 0.0) -> StoreLock:
    """The store's writer lock, to use as `with writer_lock(url): ...` around create / write / finalize."""
    return StoreLock(url, storage_options, wait=wait)
