"""Feature-store read speed and size: FeatureStore.read one image at a time vs raw file reads of the same bytes.

    PYTHONPATH=src python bench/store_read.py [--images 512 --tokens 576 --clip-dim 256 --moge-dim 256]

Reference dims (T=576, Dc=Dm=1024, L=4) are 5.9 MB/image, 3 GB for 512 images; the default scales the
channel dims to 256 (1.47 MB/image, 755 MB) so the bench fits in page cache on a small machine. Features are
bf16 words of gaussian floats (random uint16 would be unrealistically incompressible).

What is measured: the page cache cannot be dropped without root, so every shard file is read once before
timing and all figures are warm-cache reads (Python + syscall + memcpy cost, not disk speed). The raw
baseline reads exactly the same byte ranges in the same order with open files, seek + readinto into a fresh
buffer per image, offsets taken from the shard indexes before timing. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import zarr

from sgeo.cache import FeatureStore, layout, store_info


def bf16_words(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return (x.view(np.uint32) >> 16).astype(np.uint16)


def build(url: str, n: int, clip_shape, moge_shape, shard_size: int, compressor: str | None) -> float:
    ids = [f"img{i:06d}" for i in range(n)]
    fp = {"bench": True, "clip_shape": clip_shape, "moge_shape": moge_shape}
    store = FeatureStore.create(
        url, image_ids=ids, paths=ids, fingerprint=fp, clip_shape=clip_shape, moge_shape=moge_shape,
        shard_size=shard_size, compressor=compressor,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    spent = 0.0
    for k in store.pending_shards():
        rows = store.shard_rows(k)
        clip = bf16_words(rng, (len(rows), *clip_shape))
        moge = bf16_words(rng, (len(rows), *moge_shape))
        recs = [{"status": "ok", "error": None, "content_hash": None, "width": 1, "height": 1}] * len(rows)
        t = time.perf_counter()
        store.write_shard(k, clip, moge, recs)
        spent += time.perf_counter() - t
    store.finalize()
    return spent


def shard_files(url: str, store: FeatureStore) -> dict[tuple[str, int], str]:
    return {
        (name, k): os.path.join(url, layout.shard_key(name, k, nd))
        for name, nd in ((layout.CLIP, 3), (layout.MOGE, 4))
        for k in range(store.num_shards)
    }


def warm(files) -> None:
    for path in files:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def time_store(url: str, order: np.ndarray) -> float:
    store = FeatureStore.open(url)  # fresh: shard indexes are parsed inside the timed loop
    t = time.perf_counter()
    for i in order.tolist():
        store.read([i])
    dt = time.perf_counter() - t
    store.close()
    return dt


def time_raw(store: FeatureStore, files: dict, order: np.ndarray) -> float:
    s = store.shard_size
    index = {}
    for (name, k), path in files.items():
        with open(path, "rb") as f:
            f.seek(-layout.index_nbytes(s), os.SEEK_END)
            index[name, k] = np.frombuffer(f.read(s * 16), "<u8").reshape(s, 2)
    handles = {key: open(path, "rb", buffering=0) for key, path in files.items()}  # noqa: SIM115
    shapes = {layout.CLIP: store.clip_shape, layout.MOGE: store.moge_shape}
    t = time.perf_counter()
    for i in order.tolist():
        k, j = divmod(i, s)
        for name in (layout.CLIP, layout.MOGE):
            buf = np.empty(shapes[name], np.uint16)
            f = handles[name, k]
            f.seek(int(index[name, k][j, 0]))
            f.readinto(memoryview(buf.reshape(-1).view(np.uint8)))
    dt = time.perf_counter() - t
    for f in handles.values():
        f.close()
    return dt


def time_zarr(url: str, order: np.ndarray) -> float:
    g = zarr.open_group(url, mode="r")
    clip, moge = g["clip"], g["moge"]
    t = time.perf_counter()
    for i in order.tolist():
        clip[i]
        moge[i]
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=576)
    ap.add_argument("--clip-dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--moge-dim", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--zstd-images", type=int, default=64, help="images in the zstd store (0: skip)")
    ap.add_argument("--dir", default=None, help="where to build the stores (default: a temp dir)")
    args = ap.parse_args()

    n = args.images
    clip_shape = (args.tokens, args.clip_dim)
    moge_shape = (args.layers, args.tokens, args.moge_dim)
    raw_per_image = 2 * (int(np.prod(clip_shape)) + int(np.prod(moge_shape)))
    root = tempfile.mkdtemp(prefix="sgeo-bench-", dir=args.dir)
    url = os.path.join(root, "plain.zarr")
    try:
        print(f"store: {n} images, clip {clip_shape}, moge {moge_shape}, bf16, shard {args.shard_size}")
        print(f"raw feature bytes: {raw_per_image / 1e6:.3f} MB/image, {n * raw_per_image / 1e9:.3f} GB")
        spent = build(url, n, clip_shape, moge_shape, args.shard_size, None)
        print(f"write_shard: {n * raw_per_image / 1e6 / spent:.0f} MB/s (incl. sha256 of each shard)")

        store = FeatureStore.open(url)
        info = store_info(url)
        print(
            f"on disk: arrays {info['array_bytes'] / n / 1e6:.4f} MB/image "
            f"({100 * (info['array_bytes'] / (n * raw_per_image) - 1):+.3f}% vs raw), "
            f"whole store {info['bytes'] / n / 1e6:.4f} MB/image "
            f"({100 * (info['bytes'] / (n * raw_per_image) - 1):+.3f}%)"
        )

        files = shard_files(url, store)
        warm(files.values())
        rng = np.random.default_rng(1)
        orders = {"sequential": np.arange(n), "random": rng.permutation(n)}
        mb = n * raw_per_image / 1e6
        print(
            f"read, one image per call, warm page cache, best of {args.repeats} interleaved runs "
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):"
        )
        for label, order in orders.items():
            t_store, t_raw = [], []
            for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits both alike
                t_store.append(time_store(url, order))
                t_raw.append(time_raw(store, files, order))
            t_zarr = time_zarr(url, order)
            print(
                f"  {label:10s} FeatureStore.read {mb / min(t_store):6.0f} MB/s   raw file reads "
                f"{mb / min(t_raw):6.0f} MB/s   ratio {min(t_raw) / min(t_store):.2f} "
                f"(median of pairs {statistics.median(r / s for r, s in zip(t_raw, t_store, strict=True)):.2f})"
                f"   plain zarr arr[i]: {mb / t_zarr:4.0f} MB/s, {1e3 * t_zarr / n:.2f} ms/image"
            )

        if args.zstd_images:
            m = min(args.zstd_images, n)
            zurl = os.path.join(root, "zstd.zarr")
            build(zurl, m, clip_shape, moge_shape, args.shard_size, "zstd")
            zinfo = store_info(zurl)
            order = np.arange(m)
            warm(p for p in shard_files(zurl, FeatureStore.open(zurl)).values())
            t = min(time_store(zurl, order) for _ in range(args.repeats))
            print(
                f"zstd (level {layout.ZSTD_LEVEL}) on {m} images: {zinfo['array_bytes'] / (m * raw_per_image):.3f} "
                f"of raw size, read {m * raw_per_image / 1e6 / t:.0f} MB/s (decoded bytes)"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
