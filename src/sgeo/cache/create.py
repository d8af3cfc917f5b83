"""Creating a feature store, or reopening the same one to resume: `FeatureStore.create` is `create_store`.

A resume must find exactly what the writer asks for (fingerprint, encoding, array names in order and their
shapes, shard size, image list); a damaged manifest is rebuilt from the writer's image list when every commit
marker agrees with it, and committed shards whose objects are missing or cut short are refused with the
repair command.
"""

from __future__ import annotations

import zarr

from sgeo.cache import layout
from sgeo.cache.fingerprint import canonicalize, check_fingerprint, fingerprint_digest, short
from sgeo.cache.layout import COMMITS, GROUP_META, LOCK, MANIFEST, StoreMismatchError
from sgeo.cache.location import Location
from sgeo.cache.manifest import initial_table, to_parquet_bytes
from sgeo.cache.shards import damaged
from sgeo.errors import SgeoError

ARRAY_CONFIG = {"write_empty_chunks": True}  # every row gets its inner chunk: fixed shard sizes


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
            store = cls._from_attrs(loc, existing)
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
        "num_shards": -(-n // shard_size),
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
    return cls._from_attrs(loc, attrs)


def check_resume(store, fingerprint, dtype, shapes, shard_size, image_ids, paths) -> None:
    check_fingerprint(store.url, store.fingerprint, fingerprint)
    if list(store.shapes) != list(shapes):
        raise StoreMismatchError(
            f"store {store.url} holds arrays {', '.join(store.shapes)} but {', '.join(shapes)} were asked; "
            "use the same encoders or another --store"
        )
    for key, have, asked in (
        ("dtype", store.dtype, dtype),
        *((f"{name} shape", store.shapes[name], shape) for name, shape in shapes.items()),
        ("shard_size", store.shard_size, shard_size),
    ):
        if have != asked:
            raise StoreMismatchError(
                f"store {store.url} has {key}={have} but {asked} was asked; use the same setting or another --store"
            )
    try:
        stored = store.image_ids()
    except SgeoError:
        stored = _rewrite_manifest(store, image_ids, paths)
    if stored != image_ids:
        if len(stored) != len(image_ids):
            what = f"holds {len(stored)} images but {len(image_ids)} were given"
        else:
            r = next(i for i, (a, b) in enumerate(zip(stored, image_ids, strict=True)) if a != b)
            what = f"has image {short(stored[r], 40)!r} at row {r} but the list gives {short(image_ids[r], 40)!r}"
        raise StoreMismatchError(
            f"store {store.url} was made for another image list: it {what}; use another --store or the same list"
        )
    problem = missing_objects(store)
    if problem:
        raise damaged(store.url, problem)


def _rewrite_manifest(store, image_ids: list[str], paths: list[str]) -> list[str]:
    """A damaged manifest.parquet, rebuilt from the image list a resuming writer gives, where every commit
    marker agrees with that list (the manifest's statuses come from the markers anyway)."""
    if len(image_ids) != store.num_rows:
        raise store.manifest_error("it cannot be rebuilt: the image list has another length")
    for k, marker in store.load_markers().items():
        if any(rec["image_id"] != image_ids[rec["row"]] for rec in marker["records"]):
            raise store.manifest_error(f"it cannot be rebuilt: shard {k} holds other images than the list")
    store.location.put_atomic(MANIFEST, to_parquet_bytes(initial_table(image_ids, paths)))
    store._base, store._ids = None, None
    return store.image_ids()


def missing_objects(store) -> str | None:
    """The first committed shard whose array object is missing or has the wrong size (one listing)."""
    files = store.location.files()
    for k in sorted(store.committed_shards()):
        for name in store.shapes:
            key = layout.shard_key(name, k, 1 + len(store.stored_shapes[name]))
            size = files.get(key)
            if size is None:
                return f"{name} shard {k} is committed but its object {key} is missing"
            want = store.shard_nbytes(k, name)
            if (want is not None and size != want) or size < layout.index_nbytes(store.shard_size):
                return f"{name} shard {k} object {key} has {size} bytes, expected {want} (truncated?)"
    return None


def read_group_attrs(loc: Location) -> dict | None:
    """Attributes of the root zarr.json, or None when there is none."""
    import json

    loc.check_not_file()
    if not loc.exists(GROUP_META):
        return None
    try:
        meta = json.loads(loc.cat(GROUP_META))
    except (ValueError, UnicodeDecodeError) as e:
        raise SgeoError(f"{loc.url}/zarr.json is not valid JSON ({e}); the store is damaged") from e
    return meta.get("attributes", {}) if meta.get("node_type") == "group" else {}


def marker_names(loc: Location) -> dict[str, int]:
    """Commit marker file name -> shard, of the markers that exist now."""
    return {n: k for n in loc.listdir(COMMITS) if (k := layout.parse_marker_name(n)) is not None}


def _array_names(attrs: dict) -> list[str]:
    """The arrays a (half-created) store's attributes name; nothing when they name none validly."""
    try:
        return list(layout.shapes_from_attrs("", attrs))
    except SgeoError:
        return []
