"""What `FeatureStore.write_shard` writes for one shard, checked: each array's words, the rows' records in
their stored form, and the sha256 of each array's shard and of every row (the commit marker's digests)."""

from __future__ import annotations

import numpy as np

from sgeo.cache.integrity import sha256
from sgeo.cache.manifest import normalize_records
from sgeo.errors import SgeoError


def shard_contents(store, rows: range, arrays: dict[str, np.ndarray], records: list[dict]):
    """(words {name: contiguous words}, stored records, digests) of `store`'s shard holding `rows`.

    arrays: exactly the store's names, each [rows, *stored_shapes[name]] stored words of the store's
    encoding. Rows whose record says "failed" are stored as zeros (the caller's arrays are not changed)."""
    if not isinstance(arrays, dict):
        raise SgeoError(f"write_shard takes {{array name: words}}, got {type(arrays).__name__}")
    store.check_names(arrays, exact=True)
    words = {
        name: _checked(store, name, arrays[name], (len(rows), *stored))
        for name, stored in store.stored_shapes.items()
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
    return words, recs, digests


def _checked(store, name: str, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != store.encoding.words:
        raise SgeoError(
            f"{name} is {a.dtype} but this {store.dtype} store takes {store.encoding.words} words; convert "
            f"with sgeo.pipeline.features.encode(tensor, {store.dtype!r})"
        )
    if a.shape != shape:
        raise SgeoError(f"{name} has shape {a.shape} but shard rows need {shape}; check the encoder output")
    return np.ascontiguousarray(a)
