"""A store written by the sgeo before named arrays (f0ff0e4: schema version 1, `clip_shape`/`moge_shape`, no
`arrays`), kept as files in tests/data/legacy_store_v1.zarr, and the data it holds.

The files were written by `write_legacy` below with that sgeo's API, run once as

    git -C REPO archive f0ff0e4 src | tar -x -C OLD && PYTHONPATH=OLD/src python tests/legacy_store.py OUT

and are kept so that every later sgeo is checked against what the old one wrote (reads, markers, objects).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).parent / "data" / "legacy_store_v1.zarr"
IDS = [f"a{i}" for i in range(5)]
PATHS = [f"/legacy/{i}.jpg" for i in IDS]
FINGERPRINT = {"clip": {"weights": "ab" * 8}, "moge": {"weights": "cd" * 8}, "dtype": "bf16"}
CLIP_SHAPE, MOGE_SHAPE = (3, 4), (2, 3, 4)
SHARD_SIZE = 2  # 3 shards: 2 + 2 + 1 rows
FAILED_ROW = 3


def words(shape: tuple[int, ...], salt: int) -> np.ndarray:
    """Deterministic bf16 words (no random generator: its stream may change with numpy)."""
    n = int(np.prod(shape))
    return ((np.arange(n, dtype=np.uint64) * 2654435761 + salt) % 65536).astype(np.uint16).reshape(shape)


def data() -> dict[str, np.ndarray]:
    return {"clip": words((len(IDS), *CLIP_SHAPE), 1), "moge": words((len(IDS), *MOGE_SHAPE), 2)}


def stored() -> dict[str, np.ndarray]:
    """What the store holds: the data, with the failed row zeroed."""
    out = {name: a.copy() for name, a in data().items()}
    for a in out.values():
        a[FAILED_ROW] = 0
    return out


def records(rows: range) -> list[dict]:
    return [
        {"status": "failed", "error": "cannot decode"}
        if r == FAILED_ROW
        else {"status": "ok", "content_hash": f"h{r}", "width": 64 + r, "height": 48}
        for r in rows
    ]


def write_legacy(url: str) -> None:
    """The fixture, through the pre-change API (clip_shape/moge_shape, write_shard(k, clip, moge, records))."""
    from sgeo.cache import FeatureStore

    store = FeatureStore.create(url, image_ids=IDS, paths=PATHS, fingerprint=FINGERPRINT, clip_shape=CLIP_SHAPE,
                                moge_shape=MOGE_SHAPE, dtype="bf16", shard_size=SHARD_SIZE)  # fmt: skip
    arrays = data()
    for k in range(store.num_shards):
        r = store.shard_rows(k)
        store.write_shard(k, arrays["clip"][r.start : r.stop], arrays["moge"][r.start : r.stop], records(r))
    store.finalize()


if __name__ == "__main__":
    write_legacy(sys.argv[1])
