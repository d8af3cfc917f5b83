"""The Zarr v3 feature store: layout, encodings, fingerprint, writer, reader, lock, verify. Knows nothing of
torch modules (the torch side of the encodings is sgeo.pipeline.features)."""

from sgeo.cache.fingerprint import canonicalize, check_fingerprint, fingerprint_digest
from sgeo.cache.inspect import human_bytes, plan_store_bytes, store_info
from sgeo.cache.layout import ENCODINGS, SCHEMA_VERSION, StoreMismatchError
from sgeo.cache.lock import writer_lock
from sgeo.cache.store import FeatureStore
from sgeo.cache.verify import repair_store, verify_store

__all__ = [
    "ENCODINGS",
    "SCHEMA_VERSION",
    "FeatureStore",
    "StoreMismatchError",
    "canonicalize",
    "check_fingerprint",
    "fingerprint_digest",
    "human_bytes",
    "plan_store_bytes",
    "repair_store",
    "store_info",
    "verify_store",
    "writer_lock",
]
