"""The unit of work of `sgeo extract`: one store shard, read, decoded, encoded and written in one process.

`ShardWorker` is a Ray Data actor holding the towers. For each shard it decodes the images on a small thread
pool, feeding the towers batch by batch as the pixels arrive (decoding runs ahead while torch encodes;
both release the GIL), and writes the shard with one `write_shard` call (arrays, digests, then the commit
marker). Pixels and features never leave the process: only a stats row goes back to the driver.

Batches are always the same fixed-size slices from the shard's first row: CPU kernels are not
batch-invariant to the bit, so batch composition must be a function of the shard only (resume = bit-exact).

A retry (--retry-failed) of a committed shard re-reads only the rows its marker records as failed and
encodes them in the same batch slices as a first run (the kept rows' pixels are zeros there: a row's
features depend on its own pixels and the batch's shape, not its neighbours'); every other row keeps its
stored words and record.

With --compile the towers are compiled for one batch shape: the tail batch of a shard is padded with zero
rows to the batch size and those rows dropped, so every call has the shape the first one compiled. On a GPU
the pixels are decoded into pinned host memory and copied to the device without blocking, and
`--batch-size auto` picks the batch from the device's free memory (`auto_batch_size`).
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np

from sgeo.cache import human_bytes
from sgeo.errors import SgeoError
from sgeo.model.tower_fingerprint import WEIGHT_SUFFIXES
from sgeo.precision import torch_dtype

COUNTS = ("ok", "failed", "bytes", "retried")  # what a shard's stats row counts
STAGES = ("decode_s", "wait_s", "encode_s", "write_s")  # and the busy seconds it reports
AUTO_FILL = 0.85  # --batch-size auto fills this much of the free device memory (the allocator fragments)
PROCESS_MEMORY = 768 << 20  # a worker imports torch and transformers


def read_image(image_root: str, image_id: str, processor, pixel_shape) -> tuple[dict, np.ndarray | None]:
    """One image -> (manifest record, pixels [3, S, S] or None). Never raises for a bad file."""
    from sgeo.pipeline.images import content_hash, decode_image, read_file, resolve_inside

    record = {"status": "failed", "error": None, "content_hash": None, "width": None, "height": None}
    try:
        data = read_file(resolve_inside(image_root, image_id), name=image_id)
        record["content_hash"] = content_hash(data)
        image = decode_image(data)
        record["width"], record["height"] = image.size
        pixels = processor.preprocess_images([image])[0].numpy()
        if pixels.shape != tuple(pixel_shape):
            raise SgeoError(
                f"preprocessing gave pixels of shape {pixels.shape}, expected {tuple(pixel_shape)}"
            )
    except SgeoError as e:
        record["error"] = str(e)
        return record, None
    except Exception as e:  # a decoder or preprocessing bug must cost one image, not the job
        record["error"] = f"{type(e).__name__}: {e}"
        return record, None
    record["status"] = "ok"
    return record, pixels


def encode_shard(encoder, pixels, ok: np.ndarray, batch_size: int, dtype: str, autocast_dtype=None,
                 names: list[str] | None = None, pad: bool = False) -> dict[str, np.ndarray]:  # fmt: skip
    """Pixels of one shard [n, 3, S, S] -> {tower: [n, *stored shape]} words of encoding `dtype`, for the towers
    `names` (default: every tower the encoder holds).

    `pixels` may also be a callable `(start, stop) -> [b, 3, S, S]` that delivers each batch when it is
    ready. A batch with no ok image is not encoded (its rows stay zero, as the writer stores failed rows).
    `pad`: every batch has `batch_size` rows (a short tail is padded with zeros, their features dropped), the
    one shape compiled towers are compiled for.
    """
    import torch

    from sgeo.cache.layout import encoding
    from sgeo.pipeline.features import encode

    n, enc = len(ok), encoding(dtype)
    names = encoder.names if names is None else names
    shapes = {name: encoder.towers[name].spec.feature_shape for name in names}
    batch_of = pixels if callable(pixels) else (lambda start, stop: pixels[start:stop])
    out = {name: np.zeros((n, *enc.stored_shape(shape)), enc.words) for name, shape in shapes.items()}
    context = (
        torch.autocast(device_type=encoder.device.type, dtype=autocast_dtype)
        if autocast_dtype
        else nullcontext()
    )
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = batch_of(start, stop)
        if not ok[start:stop].any():
            continue
        if pad and stop - start < batch_size:
            batch = torch.cat([batch, batch.new_zeros((batch_size - (stop - start), *batch.shape[1:]))])
        with torch.inference_mode(), context:
            features = encoder.encode_images(batch, names=names)  # {tower: [b, ...]}
        for name in names:
            out[name][start:stop] = encode(features[name][: stop - start], dtype)
    return out


def autocast_dtype(precision: str | None, autocast: bool, device: str, store_dtype: str):
    """The dtype the towers autocast to (None: fp32): --precision on any device, else the store's values on a
    GPU (bf16 for a bf16 or fp8 store) and fp32 on the CPU."""
    import torch

    from sgeo.pipeline.features import value_dtype

    if precision is None:
        return (
            value_dtype(store_dtype)
            if autocast and device != "cpu" and value_dtype(store_dtype) != torch.float32
            else None
        )
    dtype = torch_dtype(precision)
    return None if dtype == torch.float32 else dtype  # fp32: no autocast


def compile_towers(encoder, backend="inductor") -> None:
    """Compile each tower in place for one input shape (`dynamic=False`: a new shape would compile again, so
    callers pad to one batch shape, `encode_shard(pad=True)`). `backend`: torch.compile's (a name or a
    callable); tests use a cheap one."""
    for tower in encoder.towers.values():
        tower.compile(backend=backend, dynamic=False)


def auto_batch_size(
    free_bytes: int, image_bytes: int, cap: int | None = None, fill: float = AUTO_FILL
) -> int:
    """The batch for `--batch-size auto`: the largest power of two whose activations (`image_bytes` per image,
    measured) fit in `fill` of the `free_bytes` the device has, at most `cap` (a shard). A power of two, so a
    rerun whose free memory differs a little picks the same batch (and so the same numbers)."""
    fits = int(free_bytes * fill) // max(1, int(image_bytes))
    if fits < 1:
        raise SgeoError(
            f"--batch-size auto: the towers need {human_bytes(image_bytes)} per image but the GPU has "
            f"{human_bytes(free_bytes)} free; free the GPU (other processes) or give --batch-size 1"
        )
    batch = 1 << (fits.bit_length() - 1)
    return min(batch, cap) if cap else batch


def image_bytes(encoder, names: list[str], pixel_shape: tuple, autocast_dtype, probe: int = 2) -> int:
    """Device bytes one image costs the towers `names` (pixels, activations, features): the peak allocation
    of a `probe`-image batch above what was allocated before, per image (an overestimate: the weights' casts
    under autocast are in it)."""
    import torch

    device = encoder.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    context = torch.autocast("cuda", dtype=autocast_dtype) if autocast_dtype else nullcontext()
    with torch.inference_mode(), context:
        encoder.encode_images(torch.zeros((probe, *pixel_shape), device=device), names=names)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    torch.cuda.empty_cache()
    return -(-peak // probe)


def worker_memory(resolved_model, names: list[str], shard_bytes: int) -> int:
    """Bytes a worker asks Ray for: the process (torch, transformers), the weights of the towers `names` (as big
    as their files) and a shard of pixels and features, with the quarter of headroom Ray Data's memory check
    wants."""
    from pathlib import Path

    weights = 0
    for name in names:
        path = Path(resolved_model.towers[name].path)
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
        weights += sum(f.stat().st_size for f in files)
    return PROCESS_MEMORY + int(1.25 * (weights + shard_bytes))


class ShardWorker:
    """Ray Data actor: the towers that have work, loaded once; one call reads and decodes one shard's images
    once, encodes them with every tower whose store lacks the shard, and writes each of those stores' shard."""

    def __init__(self, resolved_model, processor, stores: dict, image_root: str, pixel_shape: tuple, dtype: str,
                 batch_size: int | str, torch_threads: int, decode_threads: int, device: str, autocast: bool,
                 precision: str | None = None, compile: str | None = None, shard_size: int | None = None):  # fmt: skip
        import torch

        from sgeo.model import load_encoders

        torch.set_num_threads(max(1, torch_threads))  # Ray sets OMP_NUM_THREADS=1 in workers
        # the towers only (never the LLM), and only those with work: an unchanged tower's store is not touched
        self.encoder = load_encoders(resolved_model, device=device, names=list(stores))
        self.processor, self.stores, self.image_root = processor, stores, image_root
        self.pixel_shape, self.dtype = tuple(pixel_shape), dtype
        self.pool = ThreadPoolExecutor(max(1, decode_threads), thread_name_prefix="sgeo-decode")
        self.autocast_dtype = autocast_dtype(precision, autocast, device, dtype)
        self.name = f"{os.uname().nodename}:{os.getpid()}"  # throughput is measured per worker
        self.cuda = self.encoder.device.type == "cuda"
        if batch_size == "auto":  # check_config allows it with GPUs only; measured before compiling
            per_image = image_bytes(self.encoder, list(stores), self.pixel_shape, self.autocast_dtype)
            batch_size = auto_batch_size(
                torch.cuda.mem_get_info(self.encoder.device)[0], per_image, shard_size
            )
        self.batch_size = int(batch_size)
        self.compiled = compile is not None
        if self.compiled:
            compile_towers(self.encoder, compile)
        self.staging = None  # pinned host memory the decode threads write a shard's pixels into (GPU)

    def _pixel_buffer(self, n: int) -> np.ndarray:
        """Zeroed pixels [n, 3, S, S] for one shard (failed rows stay zero). On a GPU, a view of pinned host
        memory, kept across shards (pinning is slow): each batch's copy to the device does not block, and the
        buffer is free again once a batch's features are back on the host (`encode` waits for them)."""
        import torch

        if not self.cuda:
            return np.zeros((n, *self.pixel_shape), np.float32)
        if self.staging is None or len(self.staging) < n:
            self.staging = torch.empty((n, *self.pixel_shape), dtype=torch.float32, pin_memory=True)
        self.staging[:n].zero_()
        return self.staging[:n].numpy()

    def _decode(self, image_id: str):
        start = time.perf_counter()
        record, pixels = read_image(self.image_root, image_id, self.processor, self.pixel_shape)
        return record, pixels, time.perf_counter() - start

    def _committed(self, name: str, k: int) -> tuple[np.ndarray, list[dict]]:
        """Committed shard k of tower `name`'s store as stored: its words (checked against their digests)
        and records."""
        store = self.stores[name]
        rows = store.shard_rows(k)
        return store.read(slice(rows.start, rows.stop))[name], store.marker(k)["records"]

    def __call__(self, batch: dict) -> dict:
        """The shard's stats row; a user error (a full disk, a damaged shard to retry) comes back as its
        `error`: raised, it would reach the driver as a Ray traceback that has lost the SgeoError."""
        try:
            return {**self._shard(batch), "error": [""]}
        except SgeoError as error:
            counts = dict.fromkeys((*COUNTS, "batch_size"), [0])
            seconds = dict.fromkeys(("encoded_at", *STAGES), [0.0])
            return {"shard": [int(batch["shard"][0])], "worker": [self.name], **counts, **seconds,
                    "error": [str(error)]}  # fmt: skip

    def _shard(self, batch: dict) -> dict:
        import torch

        from sgeo.cache.location import disk_full

        k, ids = int(batch["shard"][0]), json.loads(batch["ids"][0])
        work = json.loads(batch["work"][0])  # tower -> "all" (a pending shard) or "retry" (its failed rows)
        kept = {name: self._committed(name, k) for name, mode in work.items() if mode == "retry"}
        redo = set(range(len(ids))) if "all" in work.values() else {
            i for _, records in kept.values() for i, r in enumerate(records) if r["status"] == "failed"
        }  # fmt: skip
        futures = {i: self.pool.submit(self._decode, ids[i]) for i in sorted(redo)}  # decoding runs ahead
        decoded: list = [None] * len(ids)  # (record, pixels, seconds) per redone row
        pixels = self._pixel_buffer(len(ids))  # [n, 3, S, S]; failed rows stay zero

        def arrive(start: int, stop: int) -> torch.Tensor:
            for i in range(start, stop):
                if i in futures:
                    decoded[i] = futures[i].result()
                    if decoded[i][1] is not None:
                        pixels[i] = decoded[i][1]
            batch = torch.from_numpy(pixels[start:stop])
            return batch.to(self.encoder.device, non_blocking=True) if self.cuda else batch

        # Which rows are ok is known only once decoded: a batch is decoded before it is encoded (or skipped).
        ok = np.ones(len(ids), bool)
        waited = 0.0  # time the towers stood still for want of decoded pixels

        def batch_when_ready(start: int, stop: int) -> torch.Tensor:
            nonlocal waited
            before = time.perf_counter()
            tensor = arrive(start, stop)
            waited += time.perf_counter() - before
            ok[start:stop] = [i in futures and decoded[i][0]["status"] == "ok" for i in range(start, stop)]
            return tensor

        t0 = time.perf_counter()
        words = encode_shard(self.encoder, batch_when_ready, ok, self.batch_size, self.dtype, self.autocast_dtype,
                             names=list(work), pad=self.compiled)  # fmt: skip
        t1 = time.perf_counter()
        fresh = [decoded[i][0] if i in futures else None for i in range(len(ids))]  # this call's records
        for name in work:
            records = fresh
            if name in kept:  # a retry keeps every row of this store it did not redo, as committed
                old_words, old_records = kept[name]
                keep = [i for i, r in enumerate(old_records) if r["status"] != "failed"]
                words[name][keep] = old_words[keep]
                records = [
                    old if old["status"] != "failed" else new
                    for old, new in zip(old_records, fresh, strict=True)
                ]
            with disk_full(self.stores[name].url):  # one line, not a traceback from every layer of Ray
                self.stores[name].write_shard(k, {name: words[name]}, records)
        t2 = time.perf_counter()
        n_ok = sum(decoded[i][0]["status"] == "ok" for i in futures)  # the rows this call (re)did
        return {
            "shard": [k], "ok": [n_ok], "failed": [len(futures) - n_ok], "bytes": [sum(w.nbytes for w in words.values())],
            "retried": [0 if "all" in work.values() else len(futures)],
            "worker": [self.name], "encoded_at": [time.time()],
            "decode_s": [sum(d[2] for d in decoded if d is not None)], "wait_s": [waited],
            "encode_s": [t1 - t0 - waited], "write_s": [t2 - t1], "batch_size": [self.batch_size],
        }  # fmt: skip
