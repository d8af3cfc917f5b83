"""`sgeo extract`: encode every image of a dataset once into a Zarr feature store, streaming with Ray Data.

    pending shards (Ray Data rows) -> shard workers (actor pool: decode threads -> towers -> write_shard)

The unit of work is a store shard: a worker reads, decodes and encodes its images and writes it with one
`write_shard` call (arrays, then the commit marker), so workers own disjoint shard-aligned row ranges, a
shard is never half visible, and completion order cannot change a byte: rows and batch composition are fixed
by (shard, batch_size), never by which shards are in flight. Pixels and features stay in the worker; the
driver receives a stats row per shard. Memory is bounded by one shard per worker, whatever the dataset size.
A rerun of the same command resumes: `FeatureStore.create` reopens the store when the fingerprint and image
list match, and only shards without a commit marker are scheduled. With --retry-failed the committed shards
that hold failed rows are scheduled too: their worker redoes those rows and keeps the others as stored.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from sgeo.errors import SgeoError, one_line

from .config import ExtractConfig, ExtractSummary, check_config
from .ray_runtime import configure_data_context, cpu_count, start_ray, unwrap
from .resources import plan_resources
from .shard_worker import ShardWorker, worker_memory


def run_extract(config: ExtractConfig) -> ExtractSummary:
    """Encode the dataset's images into one store per tower under config.store; resumes an interrupted run."""
    from sgeo.cache.location import Location, check_shared, disk_full

    check_config(config)
    check_shared(config.store)  # workers in other processes write the stores
    Location(config.store, config.storage_options).check_not_file()
    refuse_legacy_store(config.store)
    with disk_full(config.store):
        return _extract(config)


def refuse_legacy_store(url: str) -> None:
    """`--store` names a directory of stores now; a store written before (clip and moge in one group) is one."""
    from sgeo.cache.layout import GROUP_META

    if "://" not in url and (Path(url) / GROUP_META).is_file():
        raise SgeoError(
            f"--store {url} is a single feature store (written by an earlier sgeo, clip and moge in one group); it "
            "still trains as it is (sgeo train --store), and new features go into a directory of stores: give "
            "another --store"
        )


def tower_store_url(store: str, tower: str) -> str:
    """Where tower `tower`'s store lies inside the stores directory `store`."""
    return f"{store.rstrip('/')}/{tower}"


def _extract(config: ExtractConfig) -> ExtractSummary:
    from PIL import Image

    from sgeo.cache import FeatureStore, writer_lock
    from sgeo.model import resolve_model
    from sgeo.model.tower_fingerprint import towers_fingerprint
    from sgeo.pipeline.datasets import get_dataset

    t0 = time.perf_counter()
    dataset = get_dataset(config.dataset, config.root, split=config.split)
    image_ids = [ref.image_id for ref in dataset.images()][: config.limit]
    if not image_ids:
        raise SgeoError(
            f"dataset {config.dataset!r} at {config.root} lists no images; check --root and --dataset"
        )
    image_root = str(Path(dataset.image_root).resolve())

    resolved_model = resolve_model(config.model)  # once: the driver and every worker use this object
    processor = resolved_model.processor()
    # Stage-1 data (LCS-558K) is encoded as LLaVA's pretraining saw it (CLIP's resize + centre crop), the rest
    # padded to a square; both are recorded in the fingerprint.
    processor.image_aspect_ratio = config.image_aspect_ratio or dataset.image_aspect_ratio
    preprocessing = processor.preprocessing_spec()
    specs = {spec.name: spec for spec in resolved_model.config.towers}
    names = config.towers or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SgeoError(
            f"--towers {','.join(unknown)}: the model has no such tower; its towers: {', '.join(specs)}"
        )
    pixel_shape = tuple(processor.preprocess_images([Image.new("RGB", (8, 8))]).shape[1:])
    with contextlib.ExitStack() as locks:
        stores = {}
        for name in names:  # one writer per store
            url = tower_store_url(config.store, name)
            locks.enter_context(writer_lock(url, config.storage_options))
            fingerprint = towers_fingerprint(resolved_model, preprocessing, config.dtype, [name])
            stores[name] = FeatureStore.create(
                url, image_ids=image_ids, paths=[f"{image_root}/{i}" for i in image_ids], fingerprint=fingerprint,
                shapes={name: specs[name].feature_shape}, dtype=config.dtype, shard_size=config.shard_size,
                storage_options=config.storage_options,
            )  # fmt: skip
        return _encode(config, resolved_model, processor, stores, image_ids, image_root, pixel_shape, t0)


def _encode(
    config, resolved_model, processor, stores: dict, image_ids, image_root, pixel_shape, t0
) -> ExtractSummary:
    """Schedule every shard some store lacks (or, with --retry-failed, holds failed rows of), run the workers."""
    work: dict[int, dict[str, str]] = {}  # shard -> {tower: "all" | "retry"}
    redo: dict[int, set[int]] = {}  # a retried shard -> the rows failed in any of its stores
    for name, store in stores.items():
        for k in store.pending_shards():
            work.setdefault(k, {})[name] = "all"
        for k, rows in (failed_rows(store) if config.retry_failed else {}).items():
            work.setdefault(k, {})[name] = "retry"
            redo.setdefault(k, set()).update(rows)
    first = next(iter(stores.values()))
    rows_of = {k: first.shard_rows(k) for k in work}
    todo = sum(len(rows_of[k]) if "all" in w.values() else len(redo[k]) for k, w in work.items())
    summary = ExtractSummary(config.store, first.num_rows, 0, 0, first.num_rows - todo, 0,
                             first.num_shards - len(work), 0.0, 0)  # fmt: skip
    busy = [name for name in stores if any(name in w for w in work.values())]
    if work:
        items = [{"shard": k, "work": json.dumps(work[k]),
                  "ids": json.dumps(image_ids[rows_of[k].start : rows_of[k].stop])} for k in sorted(work)]  # fmt: skip
        worker_args = {"resolved_model": resolved_model, "processor": processor,
                       "stores": {n: stores[n] for n in busy}, "image_root": image_root, "pixel_shape": pixel_shape, "dtype": config.dtype,
                       "batch_size": config.batch_size, "autocast": config.autocast,
                       "precision": config.precision, "compile": config.compile,
                       "shard_size": config.shard_size}  # fmt: skip
        from sgeo.cache.layout import encoding

        enc = encoding(config.dtype)
        features_bytes = sum(enc.row_nbytes(stores[n].shapes[n]) for n in busy)
        shard_bytes = config.shard_size * (4 * int(np.prod(pixel_shape)) + features_bytes)
        memory = worker_memory(resolved_model, busy, shard_bytes)
        _run_pipeline(config, items, worker_args, memory, todo, summary)
        for name, store in stores.items():  # the workers rewrote the retried shards' markers
            store.forget([k for k, w in work.items() if w.get(name) == "retry"])
    failed_before = 0
    for store in stores.values():
        store.finalize()
        failed_before = max(failed_before, store.attributes["counts"]["failed"])
    summary.towers = {name: ("encoded" if name in busy else "kept") for name in stores}
    summary.failed_earlier = failed_before - summary.failed
    summary.seconds = time.perf_counter() - t0
    for line in summary.lines():
        print(line)
    return summary


def _run_pipeline(config: ExtractConfig, items: list[dict], worker_args: dict, memory: int, total: int,
                  summary) -> None:  # fmt: skip
    import ray
    from tqdm import tqdm

    if config.num_gpus and not config.address:
        import torch

        if torch.cuda.device_count() < config.num_gpus:
            raise SgeoError(
                f"--num-gpus {config.num_gpus} but this machine has {torch.cuda.device_count()} GPUs"
            )
    t_start = time.time()
    num_cpus = config.num_cpus or cpu_count()
    started = start_ray(config.address, num_cpus, config.num_gpus)
    try:
        if config.address or not started:  # a cluster we did not size: plan on what it has
            num_cpus = int(ray.cluster_resources().get("CPU", 1))
        plan = plan_resources(num_cpus, config.num_gpus)
        if config.num_gpus == 0 and plan.workers > len(items):  # no idle copies of the towers
            plan = replace(plan, workers=len(items))
        # Each worker asks Ray for the memory it holds (~4 GB at ViT-L sizes), so Ray never packs more of them
        # on a node than fit; a CPU pool shrinks to what the cluster's memory holds (at least one worker).
        node_memory = ray.cluster_resources().get("memory", 0)
        if node_memory:
            if config.num_gpus == 0:
                plan = replace(plan, workers=min(plan.workers, max(1, int(node_memory // memory))))
            memory = int(min(memory, node_memory / plan.workers))
        configure_data_context()
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            ShardWorker, batch_size=1, num_cpus=plan.worker_cpus, num_gpus=plan.worker_gpus, memory=memory,
            compute=ray.data.ActorPoolStrategy(size=plan.workers, max_tasks_in_flight_per_actor=2),
            fn_constructor_kwargs={**worker_args, "torch_threads": plan.torch_threads,
                                   "decode_threads": plan.decode_threads, "device": plan.device},
        )  # fmt: skip
        encoded = []  # (worker, time its shard was written, images in the shard)
        bar = tqdm(total=total, unit="img", desc="extract", file=sys.stderr, disable=not config.progress,
                   dynamic_ncols=True, smoothing=0.1)  # fmt: skip
        with bar:
            if summary.skipped:
                bar.write(f"resuming: {summary.skipped} images already committed are kept")
            retrying = sum(1 for item in items if "all" not in json.loads(item["work"]).values())
            if retrying:
                bar.write(f"retrying the failed rows of {retrying} committed shards")
            rows = iter(ds.iter_rows())
            try:
                for row in rows:
                    if row["error"]:  # a worker's user error (shard_worker.ShardWorker.__call__)
                        raise SgeoError(row["error"])
                    n = int(row["ok"]) + int(row["failed"])
                    encoded.append((str(row["worker"]), float(row["encoded_at"]), n))
                    summary.ok += int(row["ok"])
                    if int(row["retried"]):  # a retried shard's ok and failed are its redone rows
                        summary.retried += int(row["retried"])
                        summary.recovered += int(row["ok"])
                    summary.failed += int(row["failed"])
                    summary.bytes_written += int(row["bytes"])
                    summary.shards_written += 1
                    summary.busy.add(row)
                    bar.update(n)
                    bar.set_postfix(failed=summary.failed, refresh=False)
            except Exception as e:
                user_error = unwrap(e)
                if user_error is not None:
                    raise SgeoError(one_line(str(user_error))) from None
                raise
            finally:
                rows.close()  # stop the execution now: the other shards in flight are not waited for
        if encoded:
            summary.startup_seconds = min(t for _, t, _ in encoded) - t_start
            summary.steady_images_per_s = steady_rate(encoded)
    finally:
        if started:
            ray.shutdown()


def failed_rows(store) -> dict[int, list[int]]:
    """Committed shard -> its rows recorded as failed (the shards --retry-failed redoes)."""
    statuses = store.manifest().column("status").to_pylist()
    out: dict[int, list[int]] = {}
    for row, status in enumerate(statuses):
        if status == "failed":
            out.setdefault(store.shard_of(row), []).append(row)
    return out


def steady_rate(encoded: list[tuple[str, float, int]]) -> float:
    """Images/s once warm: each worker's images after its first shard over the time since that shard, summed.

    Startup (cluster, worker imports, model load) is left out; a worker that got a single shard adds nothing.
    """
    by_worker: dict[str, list[tuple[float, int]]] = {}
    for worker, t, n in encoded:
        by_worker.setdefault(worker, []).append((t, n))
    rate = 0.0
    for shards in by_worker.values():
        shards.sort()
        if len(shards) > 1 and shards[-1][0] > shards[0][0]:
            rate += sum(n for _, n in shards[1:]) / (shards[-1][0] - shards[0][0])
    return rate
