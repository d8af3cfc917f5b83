"""The Zarr v3 feature store: layout, fingerprint, writer, reader. Knows nothing of torch modules."""

from sgeo.cache.fingerprint import canonicalize, check_fingerprint, fingerprint_digest
from sgeo.cache.inspect import human_bytes, plan_store_bytes, store_info, verify_store
from sgeo.cache.layout import SCHEMA_VERSION, StoreMismatchError
from sgeo.cache.store import FeatureStore

__all__ = [
    "SCHEMA_VERSION",
    "FeatureStore",
    "StoreMismatchError",
    "canonicalize",
    "check_fingerprint",
    "fingerprint_digest",
    "human_bytes",
    "plan_store_bytes",
    "store_info",
    "verify_store",
]
