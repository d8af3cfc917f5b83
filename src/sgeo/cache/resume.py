"""Reopening a store to resume writing it: it must be exactly what the writer asks for (fingerprint, encoding,
array names in order and their shapes, shard size, image list). A damaged manifest is rebuilt from the
writer's image list when every commit marker agrees with it; committed shards whose objects are missing or
cut short are refused with the repair command.
"""

from __future__ import annotations

from sgeo.cache.fingerprint import check_fingerprint, short
from sgeo.cache.layout import StoreMismatchError
from sgeo.cache.shards import damaged
from sgeo.errors import SgeoError


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
    store.rewrite_manifest(image_ids, paths)
    return store.image_ids()


def missing_objects(store) -> str | None:
    """The first committed shard whose array object is missing or has the wrong size (one listing)."""
    files = store.location.files()
    for k in sorted(store.committed_shards()):
        for name in store.shapes:
            problem = store.shard_size_problem(k, name, files.get(store.shard_key(name, k)))
            if problem:
                return problem
    return None
