"""Feature-store size and read speed per encoding: warm, cold (page cache evicted) and from latency-injected S3.

    PYTHONPATH=src python bench/store_read.py                       # reference dims, 48 images, everything
    PYTHONPATH=src python bench/store_read.py --skip-s3 --skip-cold --codecs   # + the lossless codec table

Features are synthetic arrays with the statistics that decide compression and fp8 error in real CLIP /
DINOv2 outputs: per-channel log-normal scales, a few outlier channels (x30) and high-norm tokens (x8),
log-normal scale-mixture tails (`realistic`); not real tower outputs (no weights here). Rows are reference
size by default (576 x 1024 and 4 x 576 x 1024: 5.9 MB per image in bf16).

What is measured, per encoding (bf16, bf16-zstd, fp8):
- size on disk per image and write speed (`write_shard`, incl. the sha256 digests);
- warm reads: every shard file read once before timing; random rows in batches (`--batch` rows per
  `FeatureStore.read`, as a loader's collate reads them), with and without the per-row sha256 check (its
  cost), and one row per call;
- cold reads: each shard file's pages evicted with posix_fadvise(DONTNEED) (only the bench's own files,
  so other users' caches stay; residency checked with mincore before each run), then the same batches;
- S3: the store on a moto server (127.0.0.1) behind a latency proxy this bench starts (aiohttp, a separate
  process, `--latency-ms` added to every request). moto answers a ranged GET by reading the whole object,
  so per request it costs O(shard), not O(row); the proxy therefore serves ranged GETs from a copy of
  each object it fetched once from moto (as S3 serves a range), and the raw moto-behind-proxy rate is
  printed too. Readers are `--workers` processes (a DataLoader's workers), each reading its batches with
  one `FeatureStore.read` per batch (all ranged GETs of a batch concurrent); shard indexes and commit
  markers are fetched before timing (one each per shard per worker, amortised over a run).
Goal: 260 MB/s of random 5.9 MB rows per node (LLaVA-1.5 stage 1 at 44 samples/s on 8 GPUs).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from sgeo.cache import FeatureStore, layout, store_info
from sgeo.pipeline.features import decode, encode

ENCODINGS = ("bf16", "bf16-zstd", "fp8")
NEED_MB_S = 260.0  # 44 images/s at 5.9 MB (bf16, reference dims)
NEED_IMAGES_S = 44.0  # LLaVA-1.5 stage 1 on one 8-GPU node


def realistic(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """[n, *shape] float32 features with CLIP/DINOv2-like statistics (see the module docstring)."""
    t, d = shape[-2], shape[-1]
    channel = np.exp(rng.normal(0.0, 0.5, d)).astype(np.float32)
    channel[rng.choice(d, 4, replace=False)] *= 30
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    x *= np.exp(0.5 * rng.standard_normal((n, *shape), dtype=np.float32))
    x *= channel * 0.5
    x[..., rng.choice(t, 4, replace=False), :] *= 8
    return x


def build(url: str, n: int, clip_shape, moge_shape, shard: int, dtype: str, so=None) -> float:
    """A store of n realistic images; returns write_shard seconds."""
    ids = [f"img{i:06d}" for i in range(n)]
    store = FeatureStore.create(url, image_ids=ids, paths=ids, fingerprint={"bench": dtype}, dtype=dtype,
                                shapes={"clip": clip_shape, "moge": moge_shape}, shard_size=shard,
                                storage_options=so)  # fmt: skip
    rng, spent = np.random.default_rng(0), 0.0
    for k in store.pending_shards():
        rows = store.shard_rows(k)
        clip = encode(torch.from_numpy(realistic(rng, len(rows), clip_shape)), dtype)
        moge = encode(torch.from_numpy(realistic(rng, len(rows), moge_shape)), dtype)
        t = time.perf_counter()
        store.write_shard(k, {"clip": clip, "moge": moge}, [{"status": "ok"}] * len(rows))
        spent += time.perf_counter() - t
    store.finalize()
    return spent


def shard_files(url: str) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(url) for f in names if "/c/" in os.path.join(d, f)]


def resident_fraction(paths: list[str]) -> float:
    """Fraction of the files' pages in the page cache (mincore over a read-only mapping of each file)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    page, total, resident = os.sysconf("SC_PAGE_SIZE"), 0, 0
    for path in paths:
        size = os.path.getsize(path)
        if not size:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            pages = -(-size // page)
            vec = (ctypes.c_ubyte * pages)()
            libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec)
            libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(size))
        finally:
            os.close(fd)
        resident += sum(v & 1 for v in vec)
        total += pages
    return resident / max(1, total)


def evict(paths: list[str]) -> None:
    """Drop these files' clean pages from the page cache (no root needed, nobody else's cache touched)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)  # dirty pages (a freshly written store) cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def read_batches(store: FeatureStore, batches: list[list[int]]) -> float:
    t = time.perf_counter()
    for rows in batches:
        store.read(rows)
    return time.perf_counter() - t


def batches_of(n: int, batch: int, count: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.choice(n, batch, replace=batch > n).tolist() for _ in range(count)]


# ------------------------------------------------------------------------------------------ codecs


def codec_table(rng: np.random.Generator, shape: tuple[int, ...], threads: int) -> None:
    """Ratio and decode MB/s of lossless candidates on bf16 words of realistic rows (decides layout.BLOSC)."""
    from concurrent.futures import ThreadPoolExecutor

    from numcodecs import Blosc, Zstd

    rows = [np.ascontiguousarray(r) for r in encode(torch.from_numpy(realistic(rng, 8, shape)), "bf16")]
    raw = sum(r.nbytes for r in rows)
    candidates = {"zstd-3 (no shuffle)": Zstd(level=3)}
    for cname, levels in (("lz4", (5,)), ("zstd", (1, 3, 5, 7))):
        for level in levels:
            for name, shuffle in (("shuffle", Blosc.SHUFFLE), ("bitshuffle", Blosc.BITSHUFFLE)):
                candidates[f"blosc {cname}-{level} {name}"] = Blosc(cname, level, shuffle)
    print(f"lossless codecs on bf16 words of {len(rows)} realistic rows {shape} (decode: best of 3):")
    with ThreadPoolExecutor(threads) as pool:
        for name, codec in candidates.items():
            enc = [codec.encode(r) for r in rows]
            outs = [np.empty_like(r) for r in rows]
            one = min(_timed(_decode_all, codec, enc, outs, None) for _ in range(3))
            par = min(_timed(_decode_all, codec, enc, outs, pool) for _ in range(3))
            print(
                f"  {name:28s} ratio {sum(map(len, enc)) / raw:.3f}   decode {raw / one / 1e6:6.0f} MB/s "
                f"1 thread, {raw / par / 1e6:6.0f} MB/s {threads} threads"
            )


def _decode_all(codec, encoded, outs, pool) -> None:
    if pool is None:
        for e, o in zip(encoded, outs, strict=True):
            codec.decode(e, out=o)
    else:
        list(pool.map(lambda eo: codec.decode(eo[0], out=eo[1]), zip(encoded, outs, strict=True)))


def _timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------ S3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def serve_proxy(port: int, upstream: str, latency_ms: float, cache: bool) -> None:
    """The latency proxy (run in its own process): every request waits latency_ms, then goes to moto; with
    cache, a ranged GET is served from a copy of the whole object (fetched once from moto)."""
    import asyncio
    import re

    from aiohttp import ClientSession, web

    objects: dict[str, bytes] = {}
    hop = {"transfer-encoding", "content-length", "content-encoding", "connection", "keep-alive"}

    async def handle(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(latency_ms / 1000)
        session: ClientSession = request.app["session"]
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        ranged = request.headers.get("Range")
        if request.method != "GET" or request.query_string:
            objects.pop(request.path, None)
        elif cache and ranged:
            data = objects.get(request.path)
            if data is None:
                plain = {k: v for k, v in headers.items() if k.lower() != "range"}
                async with session.get(upstream + request.path, headers=plain) as r:
                    if r.status == 200:
                        data = objects[request.path] = await r.read()
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", ranged)
            if data is not None and m:
                size = len(data)
                a, b = m.groups()
                start, stop = (
                    (size - int(b), size) if not a else (int(a), min(size, int(b) + 1) if b else size)
                )
                return web.Response(status=206, body=data[start:stop], headers={
                    "Content-Range": f"bytes {start}-{stop - 1}/{size}", "Accept-Ranges": "bytes"})  # fmt: skip
        async with session.request(
            request.method, upstream + request.path_qs, headers=headers, data=body
        ) as r:
            data = await r.read()
            out = {k: v for k, v in r.headers.items() if k.lower() not in hop}
            if request.method == "HEAD":  # no body, but the object's length (s3fs reads it)
                out["Content-Length"] = r.headers.get("Content-Length", "0")
                return web.Response(status=r.status, headers=out)
            return web.Response(status=r.status, body=data, headers=out)

    async def start(app):
        app["session"] = ClientSession(auto_decompress=False)

    app = web.Application(client_max_size=1 << 31)
    app.on_startup.append(start)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _s3_worker(url, so, batches, ready, go, results) -> None:
    try:
        store = FeatureStore.open(url, storage_options=so)
        for k in range(store.num_shards):  # shard indexes and markers: once per shard per reader, untimed
            store.read([k * store.shard_size])
    except Exception as e:
        ready.put(f"{type(e).__name__}: {e}")
        raise
    ready.put(None)
    go.wait()
    t = time.perf_counter()
    for rows in batches:
        store.read(rows)
    results.put((time.perf_counter() - t, sum(len(b) for b in batches)))


def s3_rate(url, so, n, row_mb, batch, workers, count) -> float:
    """MB/s of `workers` reader processes, each reading `count` batches of `batch` random rows."""
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_s3_worker, args=(url, so, batches_of(n, batch, count, 10 + w), ready, go, results))
             for w in range(workers)]  # fmt: skip
    for p in procs:
        p.start()
    for _ in procs:
        error = ready.get(timeout=300)
        if error:
            raise RuntimeError(f"a reader process failed: {error}")
    t = time.perf_counter()
    go.set()
    got = [results.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    return sum(rows for _, rows in got) * row_mb / wall


def s3_section(args, clip_shape, moge_shape, row_mb: dict) -> None:
    moto_port, proxy_port = free_port(), free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    procs = [moto]
    try:
        wait_port(moto_port)
        import boto3

        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{moto_port}", **creds).create_bucket(
            Bucket="bench"
        )
        direct = {
            "key": "bench",
            "secret": "bench",
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{moto_port}"},
        }
        n = args.s3_images
        for dtype in ENCODINGS:
            build(f"s3://bench/{dtype}.zarr", n, clip_shape, moge_shape, args.s3_shard, dtype, direct)
        print(f"S3 (moto on 127.0.0.1, {n} images per store, shards of {args.s3_shard}), random rows, "
              f"{args.s3_batches} batches per reader process; goal {NEED_MB_S:.0f} MB/s at 5.9 MB rows:")  # fmt: skip
        for latency in args.latency_ms:
            for cache in (True, False) if latency == args.latency_ms[0] else (True,):
                proxy = mp.get_context("spawn").Process(
                    target=serve_proxy, args=(proxy_port, f"http://127.0.0.1:{moto_port}", latency, cache)
                )
                proxy.start()
                procs.append(proxy)
                wait_port(proxy_port)
                so = {**direct, "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{proxy_port}"}}
                for dtype in ENCODINGS if cache else ("bf16",):
                    for batch, workers in args.s3_settings:
                        rate = s3_rate(f"s3://bench/{dtype}.zarr", so, n, row_mb[dtype], batch, workers,
                                       args.s3_batches if cache else 2)  # fmt: skip
                        print(f"  +{latency:g} ms/request {'ranges served by the proxy' if cache else 'moto serves ranges':26s}"
                              f" {dtype:9s} batch {batch:3d} x {workers} reader processes: {rate:6.0f} MB/s "
                              f"({rate / row_mb[dtype]:5.1f} images/s; {rate / row_mb[dtype] / NEED_IMAGES_S:.2f}x the pace)  "
                              f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
                proxy.terminate()
                proxy.join()
                procs.remove(proxy)
    finally:
        for p in procs:
            p.terminate()
            p.wait() if isinstance(p, subprocess.Popen) else p.join()


# ------------------------------------------------------------------------------------------ main


def parse_settings(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--tokens", type=int, default=576)
    ap.add_argument("--clip-dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--moge-dim", type=int, default=1024)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="rows per FeatureStore.read (warm and cold)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--codecs", action="store_true", help="also print the lossless codec table")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-s3", action="store_true")
    ap.add_argument("--skip-local", action="store_true", help="only the S3 section")
    ap.add_argument("--s3-images", type=int, default=32)
    ap.add_argument("--s3-shard", type=int, default=8)
    ap.add_argument("--s3-batches", type=int, default=4, help="batches per reader process")
    ap.add_argument("--s3-settings", type=parse_settings, default=parse_settings("8x1,32x1,16x2"),
                    help="BATCHxWORKERS,... loader settings to measure")  # fmt: skip
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[50.0, 20.0])
    ap.add_argument("--dir", default=None, help="where to build the local stores (default: a temp dir)")
    args = ap.parse_args()

    clip_shape, moge_shape = (args.tokens, args.clip_dim), (args.layers, args.tokens, args.moge_dim)
    n = args.images
    print(f"{n} images, clip {clip_shape}, moge {moge_shape}, shards of {args.shard_size}; "
          f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    if args.codecs:
        codec_table(np.random.default_rng(3), moge_shape, len(os.sched_getaffinity(0)))
    row_mb = {d: (layout.encoding(d).row_nbytes(clip_shape) + layout.encoding(d).row_nbytes(moge_shape)) / 1e6
              for d in ENCODINGS}  # fmt: skip
    if args.skip_local:
        s3_section(args, clip_shape, moge_shape, row_mb)
        return
    root = tempfile.mkdtemp(prefix="sgeo-bench-", dir=args.dir)
    try:
        urls = {d: os.path.join(root, f"{d}.zarr") for d in ENCODINGS}
        for dtype, url in urls.items():
            spent = build(url, n, clip_shape, moge_shape, args.shard_size, dtype)
            info = store_info(url)
            print(f"{dtype:9s} {info['array_bytes'] / n / 1e6:6.3f} MB/image on disk "
                  f"({info['array_bytes'] / (n * row_mb['bf16'] * 1e6):.3f} of bf16); "
                  f"write_shard {n * row_mb[dtype] / spent:5.0f} MB/s of stored words (incl. sha256)")  # fmt: skip

        batches = batches_of(n, min(args.batch, n), max(4, 2 * n // args.batch), seed=1)
        mb = {d: sum(map(len, batches)) * row_mb[d] for d in ENCODINGS}
        print(f"warm reads, {len(batches)} batches of {args.batch} random rows per pass, best of {args.repeats} "
              f"(MB/s of decoded stored words; load {os.getloadavg()[0]:.1f}):")  # fmt: skip
        for dtype, url in urls.items():
            for path in shard_files(url):
                with open(path, "rb") as f:
                    while f.read(1 << 24):
                        pass
            times = {}
            for check in (True, False):
                store = FeatureStore.open(url, check_digests=check)
                read_batches(store, batches[:1])
                times[check] = min(read_batches(store, batches) for _ in range(args.repeats))
            words = store.read(batches[0])
            t_decode = min(
                _timed(lambda w=words, d=dtype: [decode(a, d) for a in w.values()])
                for _ in range(args.repeats)
            )
            single = FeatureStore.open(url)
            t_single = min(read_batches(single, [[r] for r in batches[0]]) for _ in range(args.repeats))
            cost = times[True] - times[False]
            print(f"  {dtype:9s} batch read {mb[dtype] / times[True]:6.0f} MB/s with the sha256 check, "
                  f"{mb[dtype] / times[False]:6.0f} MB/s without (check: {100 * cost / times[True]:+5.1f}% of "
                  f"the read, {mb[dtype] / max(cost, 1e-9):6.0f} MB/s hashed); one row per call "
                  f"{len(batches[0]) * row_mb[dtype] / t_single:6.0f} MB/s; decode to bf16 tensors "
                  f"{len(batches[0]) * row_mb[dtype] / t_decode:6.0f} MB/s (1 thread)")  # fmt: skip

        if not args.skip_cold:
            print("cold reads (posix_fadvise DONTNEED on the store's shard files before each pass; "
                  "residency by mincore):")  # fmt: skip
            for dtype, url in urls.items():
                files = shard_files(url)
                for threads in (1, 8):
                    store = FeatureStore.open(url, read_threads=threads)
                    read_batches(store, [[k * args.shard_size] for k in range(store.num_shards)])  # indexes
                    evict(files)
                    before = resident_fraction(files)
                    t = read_batches(store, batches)
                    print(f"  {dtype:9s} {threads} read threads: {mb[dtype] / t:6.0f} MB/s "
                          f"(resident before: {100 * before:.1f}% of pages)")  # fmt: skip
        if not args.skip_s3:
            s3_section(args, clip_shape, moge_shape, row_mb)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
