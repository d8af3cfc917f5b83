"""Integrity on read: every row a store returns is checked against the sha256 its commit marker records.

Markers written since row digests exist carry `row_sha256` (per array name, one digest per row), so a row costs
one sha256 of the bytes already read (about 1.7 GB/s per thread with SHA-NI; bench/store_read.py measures
it) and never an extra read. A marker without them (older stores) gets its whole shard read and checked
against the shard sha256 the first time a row of it is read. Markers are fetched once per shard and reader.
"""

from __future__ import annotations

import hashlib

import numpy as np

from sgeo.cache.shards import damaged


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))).hexdigest()


class RowChecker:
    """The per-row sha256 check of one FeatureStore (its markers cache is the store's)."""

    def __init__(self, store):
        self.store = store
        self._digests: dict[int, dict[str, list[bytes]]] = {}  # shard -> array -> sha256 per row

    def forget(self, k: int) -> None:
        self._digests.pop(k, None)

    def verifier(self, idx: list[int]):
        """The check of rows idx, as verify(array name, row, row words) raising a one-line SgeoError that names
        the file (their markers are fetched now, once per shard)."""
        s = self.store.shard_size
        digests = self._digests_of({self.store.shard_of(r) for r in idx})

        def verify(name: str, row: int, words: np.ndarray) -> None:
            k, j = divmod(row, s)  # shard_of(row) and the row's place in it, inlined: once per row read
            self._check_row(name, row, words, digests[k][name][j])

        return verify

    def _check_row(self, name: str, row: int, words: np.ndarray, want: bytes) -> None:
        if hashlib.sha256(memoryview(words.reshape(-1).view(np.uint8))).digest() != want:
            raise damaged(
                self.store.url,
                f"{name} row {row} read from {self._key(name, self.store.shard_of(row))} does not match "
                "the sha256 in its commit marker",
            )

    def _key(self, name: str, k: int) -> str:
        return self.store.shard_key(name, k)

    def _digests_of(self, shards: set[int]) -> dict[int, dict[str, list[bytes]]]:
        todo = sorted(k for k in shards if k not in self._digests)
        if todo:
            markers = self.store.markers_of(todo)  # the ones not cached yet fetched in one batch
            for k in todo:
                rows = markers[k].get("row_sha256") or self._whole_shard_digests(k, markers[k])
                self._digests[k] = {
                    name: [bytes.fromhex(h) for h in rows[name]] for name in self.store.shapes
                }
        return {k: self._digests[k] for k in shards}

    def _whole_shard_digests(self, k: int, marker: dict) -> dict[str, list[str]]:
        """A marker without row digests: the shard against its shard digest, once; then its row digests."""
        store = self.store
        rows = list(store.shard_rows(k))
        out = {
            n: np.empty((len(rows), *shape), store.encoding.words) for n, shape in store.stored_shapes.items()
        }
        store.read_into(rows, out, None)
        for name, words in out.items():
            if sha256(words) != marker[f"{name}_sha256"]:
                raise damaged(
                    store.url,
                    f"{name} shard {k} ({self._key(name, k)}) does not match the sha256 in its commit marker",
                )
        return {name: [sha256(r) for r in words] for name, words in out.items()}
