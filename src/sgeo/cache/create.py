"""Creating a feature store, or reopening the same one to resume: `FeatureStore.create` is `create_store`.

A fresh store is written here (group attributes, one array per name, the manifest last); what a resume must
find is resume.py's.
"""

from __future__ import annotations

import zarr

from sgeo.cache import layout
from sgeo.cache.fingerprint import canonicalize, fingerprint_digest
from sgeo.cache.layout import ARRAY_CONFIG, COMMITS, GROUP_META, LOCK, MANIFEST
from sgeo.cache.location import Location
from sgeo.cache.manifest import initial_table, to_parquet_bytes
from sgeo.cache.meta import marker_names, read_group_attrs
from sgeo.cache.resume import check_resume
from sgeo.errors import SgeoError


def create_store(cls, url: str, *, image_ids: list[str], paths: list[str], fingerprint: dict,
                 shapes: dict[str, tuple[int, ...]], dtype: str = "bf16",
                 shard_size: int = 64, attributes: dict | None = None, storage_options: dict | None = None):  # fmt: skip
    """See FeatureStore.create."""
    image_ids, paths = [str(i) for i in image_ids], [str(p) for p in paths]
    enc = layout.encoding(dtype)
    shapes = layout.check_shapes(shapes)
    if not image_ids:
        raise SgeoError("cannot create a feature store with no images; check the dataset")
    if len(paths) != len(image_ids):
        raise SgeoError(f"got {len(image_ids)} image ids but {len(paths)} paths; they must pair up")
    if len(set(image_ids)) != len(image_ids):
        seen: set[str] = set()
        dup = next(i for i in image_ids if i in seen or seen.add(i))
        raise SgeoError(f"image id {dup!r} appears more than once; image ids must be unique")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise SgeoError(f"shard_size must be a positive integer, got {shard_size!r}")
    fingerprint = canonicalize(fingerprint)
    extra = canonicalize(attributes or {})
    clash = sorted(set(extra) & set(layout.RESERVED_ATTRS))
    if clash:
        raise SgeoError(f"attributes {clash} are reserved by the store; rename them")

    loc = Location(url, storage_options)
    existing = read_group_attrs(loc)
    if existing is not None:
        if "sgeo_schema_version" not in existing:
            raise SgeoError(
                f"{loc.url} holds a zarr node that is not an sgeo feature store; use another --store"
            )
        if loc.exists(MANIFEST):
            store = cls(loc, existing)
            check_resume(store, fingerprint, enc.name, shapes, shard_size, image_ids, paths)
            return store
        if marker_names(loc):
            raise SgeoError(
                f"store {loc.url} has commit markers but no manifest.parquet; delete it or use another --store"
            )
        # a create killed before its last step: start over (its arrays and the ones asked for now)
        for key in (GROUP_META, *_array_names(existing), *shapes):
            loc.rm_tree(key)
    elif [n for n in loc.listdir("") if n != COMMITS] or [n for n in loc.listdir(COMMITS) if n != LOCK]:
        raise SgeoError(
            f"{loc.url} exists and is not an sgeo feature store (no zarr.json); use a new --store"
        )

    n = len(image_ids)
    attrs = {
        "sgeo_schema_version": layout.schema_version(shapes),
        "sgeo_dtype": enc.values,
        "sgeo_encoding": enc.describe(),
        "dtype": enc.name,
        "num_rows": n,
        "shard_size": shard_size,
        "num_shards": layout.num_shards(n, shard_size),
        **layout.shape_attrs(shapes),
        "compressor": None,
        "fingerprint": fingerprint,
        "fingerprint_digest": fingerprint_digest(fingerprint),
        "counts": {"ok": 0, "failed": 0, "pending": n},
    }
    if "preprocessing" in fingerprint and "preprocessing" not in extra:
        attrs["preprocessing"] = fingerprint["preprocessing"]
    attrs.update(extra)

    group = zarr.create_group(loc.zarr_store, attributes=attrs, zarr_format=3)
    for name, row_shape in shapes.items():
        stored = enc.stored_shape(row_shape)
        group.create_array(
            name,
            shape=(n, *stored),
            chunks=(1, *stored),
            shards=(shard_size, *stored),
            dtype=enc.words,
            fill_value=0,
            dimension_names=layout.dimension_names(len(row_shape)),
            attributes={"sgeo_dtype": enc.values, "sgeo_encoding": enc.describe()},
            config=ARRAY_CONFIG,
            **enc.array_codecs(),
        )
    loc.put_atomic(MANIFEST, to_parquet_bytes(initial_table(image_ids, paths)))  # last: the store exists
    return cls(loc, attrs)


def _array_names(attrs: dict) -> list[str]:
    """The arrays a (half-created) store's attributes name; nothing when they name none validly."""
    try:
        return list(layout.shapes_from_attrs("", attrs))
    except SgeoError:
        return []
