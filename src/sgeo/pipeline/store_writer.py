"""Writing a whole feature store in this process, without Ray: what tests, benches and notebooks need.

`sgeo extract` is the road for datasets (parallel workers, retries, a writer lock); this is the same store
(`FeatureStore.create` + `write_shard` + `finalize`, words from `sgeo.pipeline.features.encode`) for features
already in hand, or computed a shard at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from sgeo.cache import FeatureStore
from sgeo.pipeline.features import encode

Features = Mapping[str, torch.Tensor]


def write_store(url: str, *, image_ids: list[str], paths: list[str], fingerprint: dict,
                features: Features | Callable[[range], Features], shapes: dict | None = None,
                dtype: str = "bf16", shard_size: int = 64, failed: Mapping[str, str] | None = None,
                ) -> FeatureStore:  # fmt: skip
    """Create (or resume) the store at `url` and write every pending shard; returns the finalized store.

    features: {array name: tensor [N, *shape]} of every image in `image_ids` order, or a function of a
    shard's rows (a range) giving {array name: tensor [rows, *shape]} (features computed a shard at a
    time). shapes: {name: feature shape per image}; taken from the tensors when they are given whole.
    failed: image id -> error, rows recorded as failed (stored as zeros)."""
    if shapes is None:
        shapes = {name: tuple(t.shape[1:]) for name, t in features.items()}
    failed = failed or {}
    store = FeatureStore.create(url, image_ids=image_ids, paths=paths, fingerprint=fingerprint, shapes=shapes,
                                dtype=dtype, shard_size=shard_size)  # fmt: skip
    for k in store.pending_shards():
        rows = store.shard_rows(k)
        tensors = (
            features(rows)
            if callable(features)
            else {n: t[rows.start : rows.stop] for n, t in features.items()}
        )
        records = [
            {"status": "failed", "error": failed[image_ids[r]]}
            if image_ids[r] in failed
            else {"status": "ok"}
            for r in rows
        ]
        store.write_shard(k, {name: encode(tensors[name], dtype) for name in shapes}, records)
    store.finalize()
    return store
