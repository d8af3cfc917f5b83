"""How `sgeo extract` lays its shard workers out on a cluster: actors, CPUs, torch and decode threads."""

from __future__ import annotations

from dataclasses import dataclass

MAX_CPU_ACTORS = 4  # each holds a copy of the towers


@dataclass(frozen=True)
class Resources:
    device: str  # "cpu" | "cuda"
    workers: int  # shard-worker actors: one per GPU, or a small CPU pool
    worker_cpus: float  # logical CPUs per worker
    worker_gpus: float
    torch_threads: int  # intra-op threads per worker
    decode_threads: int  # read + decode + preprocess threads per worker


def plan_resources(num_cpus: int, num_gpus: int) -> Resources:
    """One worker per GPU, its decode threads on the CPUs that GPU has; on CPU a small pool of workers with
    one thread each.

    A worker does the whole shard (decode, encode, write), so nothing but a stats row crosses processes.
    On CPU, several narrow workers beat one wide one: OpenMP threads stall when their cores are shared, and
    one-thread workers degrade gracefully; a decode thread shares its worker's core (decoding is ~1% of
    encoding at ViT-B and up). The plan depends only on the counts, so a rerun of the same command encodes
    with the same threads and batches, hence the same bits.
    """
    num_cpus = max(1, int(num_cpus))
    if num_gpus > 0:
        per_gpu = max(1, num_cpus // num_gpus)
        return Resources("cuda", num_gpus, per_gpu, 1, 1, max(1, per_gpu - 1))
    workers = min(num_cpus, MAX_CPU_ACTORS)
    return Resources("cpu", workers, num_cpus / workers, 0, max(1, num_cpus // workers), 1)
