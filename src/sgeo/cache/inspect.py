"""Looking at stores from outside: info (what is there) and plan (how big it will be, how fast it must read)."""

from __future__ import annotations

from sgeo.cache import layout
from sgeo.cache.manifest import status_counts
from sgeo.cache.store import FeatureStore
from sgeo.errors import SgeoError

# LLaVA-1.5 stage 1 on 8 x A100: 44 samples/s per node (the reference's pretraining pace).
LLAVA_SAMPLES_PER_S_PER_GPU = 44 / 8


def human_bytes(n: float) -> str:
    """Decimal units, 3 significant digits: 5.9 MB, 3.29 TB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n} B"


def plan_store_bytes(num_images: int, shapes: dict[str, tuple[int, ...]], dtype: str = "bf16",
                     shard_size: int = 64, gpus: int = 8) -> dict:  # fmt: skip
    """Bytes a finished store of arrays `shapes` ({name: feature shape per image}) takes, per image (features
    + shard index entries) and in total, and the read rate that `gpus` GPUs need at LLaVA-1.5's stage-1 pace.

    Reference dims (clip 576 x 1024 and moge 4 x 576 x 1024) in bf16: 1.18 MB + 4.72 MB = 5.9 MB per image,
    3.29 TB for LCS-558K (558,128 images). Compressed encodings are estimated with their measured size ratio
    (`Encoding.size_ratio`). The manifest and markers add about 300 bytes per image.
    """
    if not isinstance(num_images, int) or num_images < 1:
        raise SgeoError(f"--images must be a positive number of images, got {num_images}")
    if not isinstance(gpus, int) or gpus < 1:
        raise SgeoError(f"--gpus must be at least 1, got {gpus}")
    enc = layout.encoding(dtype)
    shapes = layout.check_shapes(shapes)
    per_array = {name: round(enc.row_nbytes(shape) * enc.size_ratio) for name, shape in shapes.items()}
    per_image = sum(per_array.values())
    shards = layout.num_shards(num_images, shard_size)
    index_b = len(shapes) * shards * layout.index_nbytes(shard_size)
    total = num_images * per_image + index_b
    rate = per_image * LLAVA_SAMPLES_PER_S_PER_GPU * gpus
    about = "~" if enc.size_ratio != 1.0 else ""
    parts = " + ".join(f"{name} {human_bytes(b)}" for name, b in per_array.items())
    return {
        "encoding": enc.name,
        "num_images": num_images,
        "array_bytes_per_image": per_array,
        "bytes_per_image": per_image,
        "index_bytes": index_b,
        "total_bytes": total,
        "gpus": gpus,
        "read_bytes_per_s": rate,
        "lossless": enc.lossless,
        "measured": enc.measured,
        "summary": (
            f"{about}{human_bytes(per_image)}/image ({parts}), {about}{human_bytes(total)} for {num_images:,} "
            f"images; {human_bytes(rate)}/s for {gpus} GPUs at LLaVA-1.5's pace"
        ),
    }


def store_info(url: str, storage_options: dict | None = None) -> dict:
    """What a store holds: each array's shape and bytes, encoding, fingerprint digest, per-status counts,
    shards committed/total."""
    store = FeatureStore.open(url, storage_options=storage_options)
    counts = status_counts(store.manifest())
    committed = store.committed_shards()
    files = store.location.files()
    arrays = {
        name: {
            "shape": list(shape),
            "bytes": sum(size for key, size in files.items() if key.startswith(layout.chunk_prefix(name))),
        }
        for name, shape in store.shapes.items()
    }
    array_bytes = sum(a["bytes"] for a in arrays.values())
    raw = sum(store.encoding.row_nbytes(shape) for shape in store.shapes.values())
    rows_written = sum(len(store.shard_rows(k)) for k in committed)
    return {
        "url": store.url,
        "schema_version": store.attributes["sgeo_schema_version"],
        "num_rows": store.num_rows,
        "dtype": store.dtype,
        "arrays": arrays,
        "shard_size": store.shard_size,
        "shards_committed": len(committed),
        "shards_total": store.num_shards,
        "counts": counts,
        "fingerprint_digest": store.fingerprint_digest,
        "bytes": sum(files.values()),
        "array_bytes": array_bytes,
        "bytes_per_image": array_bytes / rows_written if rows_written else None,
        "raw_bytes_per_image": raw,
    }
