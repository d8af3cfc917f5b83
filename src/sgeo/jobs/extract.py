"""`sgeo extract`: encode every image of a dataset once into a Zarr feature store, streaming with Ray Data.

    pending shards -> read + decode + preprocess (CPU tasks) -> encoders (actor pool) -> shard writer (tasks)

The unit of work is a store shard: one Ray Data row carries the images of one shard from decoding to the
writer, which writes it with one `write_shard` call (arrays, then the commit marker). So writers own
disjoint shard-aligned row ranges, a shard is never half visible, and completion order cannot change a
byte: rows and batch composition are fixed by (shard, batch_size), never by which shards are in flight.
Memory stays bounded by a few shards per stage (fixed pools and Ray Data backpressure on a capped object
store), whatever the dataset size. A rerun of the same command resumes: `FeatureStore.create` reopens the
store when the fingerprint and image list match, and only shards without a commit marker are scheduled.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sgeo.cache import human_bytes
from sgeo.errors import SgeoError
from sgeo.model.processing import ASPECT_MODES

STORE_DTYPES = ("bf16", "fp16")
PRECISIONS = ("bf16", "fp16", "fp32")  # encoder compute (autocast); None: the store dtype on GPU, fp32 on CPU
# Object store of the local Ray cluster: room for a few shards in flight per stage, within these bounds.
MIN_OBJECT_STORE = 512 << 20
MAX_OBJECT_STORE_FRACTION = 0.3
MAX_CPU_ACTORS = 4  # each holds a copy of the model
DECODE_WORKER_MEMORY = 768 << 20  # a decode worker imports torch and transformers (for preprocessing)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Only these variables reach workers of a cluster joined with --address (no credentials are forwarded).
FORWARDED_ENV = (
    "SGEO_HOME",
    "SGEO_CLIP_PATH",
    "SGEO_MOGE_PATH",
    "SGEO_LLAVA_PATH",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


@dataclass
class ExtractConfig:
    root: Path
    store: str
    dataset: str = "synthetic"
    model: str = "tiny"
    split: str | None = None
    dtype: str = "bf16"
    batch_size: int = 16
    shard_size: int = 64
    num_cpus: int | None = None
    num_gpus: int = 0
    address: str | None = None
    limit: int | None = None
    image_aspect_ratio: str | None = None  # pad | crop; None: the dataset's default (see run_extract)
    autocast: bool = True  # on GPU, encode under autocast to the store dtype; CPU encodes in fp32
    precision: str | None = None  # autocast to this on any device (fp32: none); None: as `autocast` says
    storage_options: dict | None = None  # fsspec options of an s3://... store (library use)
    progress: bool = True


@dataclass
class ExtractSummary:
    store: str
    images: int  # rows in the store
    ok: int  # images encoded by this run
    failed: int  # images recorded as failed by this run
    skipped: int  # images in shards an earlier run committed
    shards_written: int
    shards_skipped: int
    seconds: float
    bytes_written: int  # feature bytes of the shards this run wrote
    startup_seconds: float = 0.0  # from the start until the first shard was encoded (Ray, workers, models)
    steady_images_per_s: float = 0.0  # throughput once warm (steady_rate; 0 with too few shards)

    @property
    def images_per_s(self) -> float:
        return (self.ok + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        done = self.ok + self.failed
        out = [
            f"extracted {done} images ({self.shards_written} shards) in {self.seconds:.1f} s: {self.ok} ok, "
            f"{self.failed} failed, {self.skipped} skipped (already committed); "
            f"{self.images_per_s:.2f} images/s; {human_bytes(self.bytes_written)} written to {self.store}"
        ]
        if self.steady_images_per_s:
            out.append(
                f"startup (cluster, workers, model load) {self.startup_seconds:.1f} s, then "
                f"{self.steady_images_per_s:.2f} images/s once warm"
            )
        if self.failed:
            out.append(
                f"{self.failed} images failed; their errors are in the store's manifest "
                f"(sgeo cache info {self.store})"
            )
        return out


@dataclass(frozen=True)
class Resources:
    """How the stages are laid out on the cluster (logical Ray resources and torch threads)."""

    device: str  # "cpu" | "cuda"
    encoder_actors: int
    actor_cpus: float  # logical CPUs per encoder actor
    actor_gpus: float
    torch_threads: int  # intra-op threads per encoder actor
    decode_tasks: int  # concurrent read + decode + preprocess tasks
    decode_cpus: float  # logical CPUs per decode task
    write_tasks: int


def plan_resources(num_cpus: int, num_gpus: int) -> Resources:
    """One encoder actor per GPU; on CPU a small pool of actors with few threads each.

    On CPU, several narrow actors beat one wide one: OpenMP intra-op threads stall when their cores are
    shared (with decoding here, with anything on a busy host; tiny preset on 2 busy cores: 1 thread 13-27
    images/s, 2 threads 2.5-6), while one-thread actors degrade gracefully. Actors get three quarters of
    the logical CPUs and decoding one quarter. The plan depends only on the CPU count, so a rerun of the
    same command encodes with the same threads and batches, hence the same bits.
    """
    num_cpus = max(1, int(num_cpus))
    if num_gpus > 0:
        return Resources("cuda", num_gpus, 1, 1, 1, max(1, num_cpus - num_gpus), 1, 2)
    actors = min(num_cpus, MAX_CPU_ACTORS)
    decode_tasks = max(1, num_cpus // 4)
    return Resources(
        "cpu",
        actors,
        0.75 * num_cpus / actors,
        0,
        max(1, num_cpus // actors),
        decode_tasks,
        0.25 * num_cpus / decode_tasks,
        1,
    )


# ------------------------------------------------------------------------------------------ encoding


def to_storage(t, dtype: str) -> np.ndarray:
    """A float tensor -> what the store holds: bf16 as uint16 words, fp16 as float16."""
    import torch

    if dtype == "bf16":
        return t.to(torch.bfloat16).view(torch.uint16).cpu().numpy()
    return t.to(torch.float16).cpu().numpy()


def encode_shard(encoder, pixels, ok: np.ndarray, batch_size: int, dtype: str, autocast_dtype=None):
    """Pixels of one shard [n, 3, S, S] -> (clip [n, T, Dc], moge [n, L, T, Dm]) in the storage dtype.

    Always the same fixed-size batches from the shard's first row: CPU kernels are not batch-invariant
    to the bit, so batch composition must be a function of the shard only. A batch with no ok image is
    not encoded (its rows stay zero, as the writer stores every failed row).
    """
    import torch

    c, n = encoder.config, len(pixels)
    words = np.uint16 if dtype == "bf16" else np.float16
    clip_out = np.zeros((n, c.num_patches, c.clip_hidden_size), words)
    moge_out = np.zeros((n, c.moge_layers, c.num_patches, c.moge_hidden_size), words)
    context = (
        torch.autocast(device_type=encoder.device.type, dtype=autocast_dtype)
        if autocast_dtype
        else nullcontext()
    )
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if not ok[start:stop].any():
            continue
        with torch.inference_mode(), context:
            clip, moge = encoder.encode_images(pixels[start:stop])  # [b, T, Dc], [b, L, T, Dm]
        clip_out[start:stop] = to_storage(clip, dtype)
        moge_out[start:stop] = to_storage(moge, dtype)
    return clip_out, moge_out


def autocast_dtype(precision: str | None, autocast: bool, device: str, store_dtype: str):
    """The dtype encoders autocast to (None: fp32): --precision on any device, else the store dtype on GPU."""
    import torch

    if precision is None:
        precision = store_dtype if autocast and device != "cpu" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[precision]


class _Encoder:
    """Ray Data actor: the vision towers, loaded once; one call encodes one shard."""

    def __init__(self, model, dtype: str, batch_size: int, threads: int, device: str, autocast: bool,
                 precision: str | None = None):  # fmt: skip
        import torch

        from sgeo.model import load_encoders

        if threads > 0:
            torch.set_num_threads(threads)  # Ray sets OMP_NUM_THREADS=1 in workers
        self.encoder = load_encoders(model, device=device)  # the towers only: no LLM in encoder actors
        self.dtype, self.batch_size = dtype, batch_size
        self.autocast_dtype = autocast_dtype(precision, autocast, device, dtype)

    def __call__(self, batch: dict) -> dict:
        import torch

        records = json.loads(batch["records"][0])
        ok = np.array([r["status"] == "ok" for r in records])
        pixels = torch.from_numpy(np.array(batch["pixels"][0]))  # [n, 3, S, S], a writable copy
        clip, moge = encode_shard(self.encoder, pixels, ok, self.batch_size, self.dtype, self.autocast_dtype)
        return {
            "shard": batch["shard"],
            "records": batch["records"],
            "clip": clip[None],
            "moge": moge[None],
            "encoder": [f"{os.uname().nodename}:{os.getpid()}"],  # throughput is measured per encoder
            "encoded_at": [time.time()],
        }


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _Run:
    """What every task of one run needs; small to pickle (the processor travels as an object ref)."""

    run_id: str
    image_root: str
    pixel_shape: tuple[int, int, int]
    processor_ref: list  # [ObjectRef]: wrapped so Ray does not resolve it on the way in
    store: object  # FeatureStore; pickles as (url, storage_options, attributes)


_worker_cache: dict[str, tuple[str, object]] = {}  # per worker process: the current run's objects


def _cached(name: str, run: _Run, make):
    hit = _worker_cache.get(name)
    if hit is None or hit[0] != run.run_id:
        hit = (run.run_id, make())
        _worker_cache[name] = hit
    return hit[1]


def read_image(image_root: str, image_id: str, processor, pixel_shape) -> tuple[dict, np.ndarray | None]:
    """One image -> (manifest record, pixels [3, S, S] or None). Never raises for a bad file."""
    from sgeo.pipeline.images import content_hash as sha256_of
    from sgeo.pipeline.images import decode_image, resolve_inside

    record = {"status": "failed", "error": None, "content_hash": None, "width": None, "height": None}
    try:
        path = resolve_inside(image_root, image_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SgeoError(f"no such file: {image_id}") from None
        except IsADirectoryError:
            raise SgeoError(f"is a directory, not an image: {image_id}") from None
        except OSError as e:
            raise SgeoError(f"cannot read {image_id}: {e.strerror or e}") from None
        record["content_hash"] = sha256_of(data)
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


def _read_shard(batch: dict, run: _Run) -> dict:
    import ray

    processor = _cached("processor", run, lambda: ray.get(run.processor_ref[0]))
    ids = json.loads(batch["ids"][0])
    pixels = np.zeros((len(ids), *run.pixel_shape), np.float32)  # [n, 3, S, S]; failed rows stay zero
    records = []
    for i, image_id in enumerate(ids):
        record, pix = read_image(run.image_root, image_id, processor, run.pixel_shape)
        if pix is not None:
            pixels[i] = pix
        records.append(record)
    return {
        "shard": batch["shard"],
        "records": np.array([json.dumps(records)], dtype=object),
        "pixels": pixels[None],
    }


def _write_shard(batch: dict, run: _Run) -> dict:
    store = _cached("store", run, lambda: run.store)
    k = int(batch["shard"][0])
    records = json.loads(batch["records"][0])
    clip, moge = batch["clip"][0], batch["moge"][0]
    store.write_shard(k, clip, moge, records)
    n_ok = sum(r["status"] == "ok" for r in records)
    return {
        "shard": [k],
        "ok": [n_ok],
        "failed": [len(records) - n_ok],
        "bytes": [clip.nbytes + moge.nbytes],
        "encoder": batch["encoder"],
        "encoded_at": batch["encoded_at"],
    }


# ------------------------------------------------------------------------------------------ the job


def _check_config(config: ExtractConfig) -> None:
    if config.dtype not in STORE_DTYPES:
        raise SgeoError(f"--dtype {config.dtype!r} is not one of {', '.join(STORE_DTYPES)}")
    if config.precision not in (None, *PRECISIONS):
        raise SgeoError(f"--precision {config.precision!r} is not one of {', '.join(PRECISIONS)}")
    if config.precision not in (None, "fp32") and not config.autocast:
        raise SgeoError(
            f"--precision {config.precision} autocasts; drop --no-autocast (or use --precision fp32)"
        )
    for name in ("batch_size", "shard_size"):
        if getattr(config, name) < 1:
            raise SgeoError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if config.limit is not None and config.limit < 1:
        raise SgeoError(f"--limit must be at least 1, got {config.limit}")
    if config.num_cpus is not None and config.num_cpus < 1:
        raise SgeoError(f"--num-cpus must be at least 1, got {config.num_cpus}")
    if config.num_gpus < 0:
        raise SgeoError(f"--num-gpus must be 0 or more, got {config.num_gpus}")
    if config.image_aspect_ratio not in (None, *ASPECT_MODES):
        raise SgeoError(
            f"--image-aspect-ratio must be one of {', '.join(ASPECT_MODES)}, got {config.image_aspect_ratio}"
        )


def _start_ray(config: ExtractConfig, object_store: int) -> bool:
    """Join or start a Ray cluster; True if this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if config.address:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        try:
            ray.init(address=config.address, runtime_env={"env_vars": env}, **common)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise SgeoError(
                f"cannot join the Ray cluster at {config.address}: {' '.join(str(e).split())}"
            ) from None
        return True
    # address="local": never attach to a cluster some earlier `ray start` left on this machine
    ray.init(
        address="local",
        num_cpus=config.num_cpus or _cpu_count(),
        num_gpus=config.num_gpus,
        object_store_memory=object_store,
        dashboard_host="127.0.0.1",
        **common,
    )
    return True


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _configure_data_context(budget: int) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own bar counts images, not blocks
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.execution_options.preserve_order = False  # writes are order-free: each shard goes to its own rows
    ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
        object_store_memory=budget
    )
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    progress_logger = logging.getLogger("ray.data._internal.progress")
    if not any(isinstance(f, _QuietProgressNotice) for f in progress_logger.filters):
        progress_logger.addFilter(_QuietProgressNotice())


class _QuietProgressNotice(logging.Filter):
    """Drops Ray Data's notice that its progress bars are off (they are off on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Progress bars disabled" not in record.getMessage()


def _unwrap(error: BaseException) -> SgeoError | None:
    """The user error (SgeoError) behind an exception that crossed Ray, if any."""
    seen = set()
    stack = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, SgeoError):
            return e
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def run_extract(config: ExtractConfig) -> ExtractSummary:
    """Encode the dataset's images into the store at config.store; resumes an interrupted run."""
    from PIL import Image

    from sgeo.cache import FeatureStore
    from sgeo.model import resolve_model
    from sgeo.model.fingerprint import encoder_fingerprint
    from sgeo.pipeline.datasets import get_dataset

    _check_config(config)
    t0 = time.perf_counter()
    dataset = get_dataset(config.dataset, config.root, split=config.split)
    image_ids = [ref.image_id for ref in dataset.images()][: config.limit]
    if not image_ids:
        raise SgeoError(
            f"dataset {config.dataset!r} at {config.root} lists no images; check --root and --dataset"
        )
    image_root = str(Path(dataset.image_root).resolve())

    model = resolve_model(config.model)  # once: the driver and every encoder actor use this object
    processor = model.processor()
    # Stage-1 data (LCS-558K) is encoded as LLaVA's pretraining saw it (CLIP's resize + centre crop), the rest
    # padded to a square; both are recorded in the fingerprint.
    processor.image_aspect_ratio = config.image_aspect_ratio or dataset.image_aspect_ratio
    fingerprint = encoder_fingerprint(model, processor.preprocessing_spec(), config.dtype)
    pixel_shape = tuple(processor.preprocess_images([Image.new("RGB", (8, 8))]).shape[1:])
    store = FeatureStore.create(
        config.store,
        image_ids=image_ids,
        paths=[f"{image_root}/{i}" for i in image_ids],
        fingerprint=fingerprint,
        clip_shape=tuple(fingerprint["clip"]["shape"]),
        moge_shape=tuple(fingerprint["moge"]["shape"]),
        dtype=config.dtype,
        shard_size=config.shard_size,
        storage_options=config.storage_options,
    )
    pending = store.pending_shards()
    skipped = store.num_rows - sum(len(store.shard_rows(k)) for k in pending)
    summary = ExtractSummary(
        store.url, store.num_rows, 0, 0, skipped, 0, store.num_shards - len(pending), 0.0, 0
    )
    if pending:
        shard_bytes = config.shard_size * (
            4 * int(np.prod(pixel_shape))
            + 2 * (int(np.prod(fingerprint["clip"]["shape"])) + int(np.prod(fingerprint["moge"]["shape"])))
        )
        _run_pipeline(
            config, model, store, pending, image_ids, image_root, processor, pixel_shape, shard_bytes, summary
        )
    store.finalize()
    summary.seconds = time.perf_counter() - t0
    for line in summary.lines():
        print(line)
    return summary


def _run_pipeline(
    config, model, store, pending, image_ids, image_root, processor, pixel_shape, shard_bytes, summary
):
    import psutil
    import ray
    from tqdm import tqdm

    if config.num_gpus and not config.address:
        import torch

        if torch.cuda.device_count() < config.num_gpus:
            raise SgeoError(
                f"--num-gpus {config.num_gpus} but this machine has {torch.cuda.device_count()} GPUs"
            )
    t_start = time.time()
    local_plan = plan_resources(config.num_cpus or _cpu_count(), config.num_gpus)
    object_store = int(
        min(
            max(MIN_OBJECT_STORE, 2 * _shards_in_flight(local_plan) * shard_bytes),
            MAX_OBJECT_STORE_FRACTION * psutil.virtual_memory().total,
        )
    )
    started = _start_ray(config, object_store)
    try:
        plan = local_plan
        if not started or config.address:  # a cluster we did not size: plan on what it has
            plan = plan_resources(int(ray.cluster_resources().get("CPU", 1)), config.num_gpus)
        if config.num_gpus == 0 and plan.encoder_actors > len(pending):  # no idle model copies
            plan = replace(plan, encoder_actors=len(pending))
        # Each actor asks Ray for the memory it holds (at ViT-L sizes ~4 GB), so Ray never packs more actors
        # on a node than fit; CPU pools shrink to what the cluster's memory holds (at least one actor).
        actor_memory = encoder_memory(model, shard_bytes)
        node_memory = ray.cluster_resources().get("memory", 0)
        if node_memory:
            if config.num_gpus == 0:
                fit = max(1, int(node_memory // actor_memory))
                plan = replace(plan, encoder_actors=min(plan.encoder_actors, fit))
            actor_memory = int(min(actor_memory, node_memory / plan.encoder_actors))
        # Backpressure: Ray Data keeps stage outputs within this budget, a few shards per stage.
        budget = int(
            min(
                0.5 * ray.cluster_resources().get("object_store_memory", object_store),
                max(64 << 20, _shards_in_flight(plan) * shard_bytes),
            )
        )
        _configure_data_context(budget)
        run = _Run(uuid.uuid4().hex, image_root, pixel_shape, [ray.put(processor)], store)
        items = []
        for k in pending:
            rows = store.shard_rows(k)
            items.append({"shard": k, "ids": json.dumps(image_ids[rows.start : rows.stop])})
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        # The memory request (a worker, plus pixels of a shard twice) also keeps Ray Data from fusing decoding
        # into the encoder actors (fusion needs equal remote args): decoding must overlap encoding.
        ds = ds.map_batches(
            _read_shard,
            batch_size=1,
            fn_kwargs={"run": run},
            num_cpus=plan.decode_cpus,
            memory=DECODE_WORKER_MEMORY + 2 * config.shard_size * 4 * int(np.prod(pixel_shape)),
            compute=ray.data.TaskPoolStrategy(size=plan.decode_tasks),
        )
        ds = ds.map_batches(
            _Encoder,
            batch_size=1,
            num_cpus=plan.actor_cpus,
            num_gpus=plan.actor_gpus,
            memory=actor_memory,
            compute=ray.data.ActorPoolStrategy(size=plan.encoder_actors, max_tasks_in_flight_per_actor=2),
            fn_constructor_kwargs={
                "model": model,
                "dtype": config.dtype,
                "batch_size": config.batch_size,
                "threads": plan.torch_threads,
                "device": plan.device,
                "autocast": config.autocast,
                "precision": config.precision,
            },
        )
        ds = ds.map_batches(
            _write_shard,
            batch_size=1,
            fn_kwargs={"run": run},
            num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=plan.write_tasks),
        )
        total = sum(len(store.shard_rows(k)) for k in pending)
        encoded = []  # (encoder, time the shard was encoded, images in the shard)
        with tqdm(
            total=total,
            unit="img",
            desc="extract",
            file=sys.stderr,
            disable=not config.progress,
            dynamic_ncols=True,
            smoothing=0.1,
        ) as bar:
            if summary.skipped:
                bar.write(
                    f"resuming: {summary.shards_skipped} shards ({summary.skipped} images) already committed"
                )
            try:
                for row in ds.iter_rows():
                    n = int(row["ok"]) + int(row["failed"])
                    encoded.append((str(row["encoder"]), float(row["encoded_at"]), n))
                    summary.ok += int(row["ok"])
                    summary.failed += int(row["failed"])
                    summary.bytes_written += int(row["bytes"])
                    summary.shards_written += 1
                    bar.update(n)
                    bar.set_postfix(failed=summary.failed, refresh=False)
            except Exception as e:
                user_error = _unwrap(e)
                if user_error is not None:
                    raise SgeoError(" ".join(str(user_error).split())) from None
                raise
        if encoded:
            summary.startup_seconds = min(t for _, t, _ in encoded) - t_start
            summary.steady_images_per_s = steady_rate(encoded)
    finally:
        if started:
            ray.shutdown()


def encoder_memory(model, shard_bytes: int) -> int:
    """Bytes an encoder actor asks for: a worker, the towers' weights (as big as their files: fp32 in, fp32 in
    memory) and a shard in and out twice over, with the quarter of headroom Ray Data's memory check wants."""
    weights = 0
    for located in (model.clip, model.moge):
        path = Path(located.path)
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
        weights += sum(f.stat().st_size for f in files)
    return DECODE_WORKER_MEMORY + int(1.25 * (weights + 2 * shard_bytes))


def steady_rate(encoded: list[tuple[str, float, int]]) -> float:
    """Images/s once warm: each encoder's images after its first shard over the time since that shard, summed.

    Startup (cluster, worker imports, model load) and a writer's late first commit are left out; an
    encoder that got a single shard adds nothing.
    """
    by_encoder: dict[str, list[tuple[float, int]]] = {}
    for encoder, t, n in encoded:
        by_encoder.setdefault(encoder, []).append((t, n))
    rate = 0.0
    for shards in by_encoder.values():
        shards.sort()
        if len(shards) > 1 and shards[-1][0] > shards[0][0]:
            rate += sum(n for _, n in shards[1:]) / (shards[-1][0] - shards[0][0])
    return rate


def _shards_in_flight(plan: Resources) -> int:
    """Shards that may exist at once: queued and running at each actor, decoding, writing, one in hand."""
    return 2 * plan.encoder_actors + plan.decode_tasks + plan.write_tasks + 1
