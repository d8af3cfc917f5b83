"""Throughput of `sgeo extract` against (a) a naive single-process loop and (b) a bare `encode_images` loop,
and peak memory of `sgeo extract` at N and 10N images. Prints figures; asserts nothing.

    python bench/extract.py                                   # tiny and vitb, default sizes (~10 min, 2 cores)
    python bench/extract.py --models tiny --n-tiny 256 --rss-n 0

One run, same images (the synthetic dataset at 224 px), same model, batch size, shard size and CPUs for all
three. `vitb` is a random-init model written here the way the tiny preset is: a CLIPVisionModel
ViT-B/16-sized (width 768, 12 layers) at 224 px with patch 14, and a MoGe v1 checkpoint with a
dinov2_vitb14 backbone, so the encoders dominate as they do at reference scale.

What is measured:
- extract: the real `sgeo extract` CLI in a subprocess (its own local Ray cluster, --num-cpus = --threads).
  "Once warm" is the job's own figure (per encoder actor, images after its first shard over the time since,
  summed: cluster start, worker imports and model load excluded); the ratios use it. Whole-job figures
  are printed too.
- naive: model loaded once, then for each shard: read + decode + preprocess each image, encode in batches,
  `write_shard` to a store (model load excluded).
- bare: `encode_images` over pre-decoded, preprocessed pixel batches (nothing else).
  Both loops run at 1 torch thread and at --threads; the ratios use the faster of the two. CPU seconds
  per image are printed for them (robust to other load on the host, which wall-clock rates are not).
- memory: the whole process tree of the CLI (driver, raylet, GCS, workers) polled every 0.2 s; PSS sums
  shared pages once (the object store in /dev/shm included), RSS sums double-count them. Both runs use
  at least 2 shards, so both start every encoder actor.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch


def write_vitb(root: Path, seed: int = 0) -> Path:
    """A random-init SpatialGeo model dir with ViT-B-sized towers, written as the tiny preset is."""
    from sgeo.model.random_init.sizes import VIT_B
    from sgeo.model.random_init.writer import write_random_init

    return write_random_init(root, seed, VIT_B)


def process_kind(proc) -> str:
    """What a process of the extract tree is: the driver, a shard worker, or one of Ray's own servers."""
    try:
        name = proc.name()
        cmdline = " ".join(proc.cmdline()[:3])
    except psutil.Error:
        return "?"
    if "MapWorker" in name or "MapWorker" in cmdline or "ShardWorker" in cmdline:
        return "shard workers"
    if "sgeo.cli" in cmdline:
        return "driver"
    if name.startswith("ray::"):
        return "other ray workers"
    for server in ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env", "monitor"):
        if server in name or server in cmdline:
            return f"ray {server}"
    return name


def tree_sample(
    pid: int, cpu_by_pid: dict[int, float], kind_by_pid: dict | None = None, memory: bool = True
) -> tuple[int, int]:
    """(PSS, RSS) summed over a process and its descendants; records each one's CPU seconds so far.
    `memory` False: CPU only (PSS reads every mapping of every process: a throughput run must not pay it)."""
    pss = rss = 0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0, 0
    for proc in procs:
        try:
            with proc.oneshot():
                info = proc.memory_full_info() if memory else None
                cpu = proc.cpu_times()
            if info is not None:
                pss += info.pss
                rss += info.rss
            cpu_by_pid[proc.pid] = max(cpu_by_pid.get(proc.pid, 0.0), cpu.user + cpu.system)
            if kind_by_pid is not None and kind_by_pid.get(proc.pid, "python") == "python":
                kind_by_pid[proc.pid] = process_kind(proc)  # a Ray worker is "python" until it renames itself
        except psutil.Error:
            pass
    return pss, rss


def run_cli(args: list[str], store: Path, memory: bool = False) -> dict:
    shard_size = int(args[args.index("--shard-size") + 1]) if "--shard-size" in args else 64
    """Run `sgeo extract ...`: wall time, peak tree memory, CPU seconds of the tree, the summary's figures."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sgeo.cli", "extract", *args, "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak_pss = peak_rss = 0
    cpu_by_pid: dict[int, float] = {}
    kind_by_pid: dict[int, str] = {}
    timeline = []  # (seconds since start, CPU seconds of the tree so far, CPU seconds per pid so far)
    while proc.poll() is None:
        pss, rss = tree_sample(proc.pid, cpu_by_pid, kind_by_pid, memory)
        peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
        timeline.append((time.perf_counter() - t, sum(cpu_by_pid.values()), dict(cpu_by_pid)))
        # memory peaks need a fine grain; CPU times are cumulative, so a throughput run samples rarely (on
        # 2 cores a 0.2 s poll of every process took a visible share of a core from the workers)
        time.sleep(0.2 if memory else 1.0)
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"sgeo extract failed ({proc.returncode}):\n{err[-3000:]}")
    rate = float(re.search(r"; ([\d.]+) images/s;", out).group(1))
    steady = re.search(r"startup \(.*?\) ([\d.]+) s, then ([\d.]+) images/s once warm", out)
    images = int(re.search(r"extracted (\d+) images", out).group(1))
    warm_cpu_ms = float("nan")
    warm_by_kind: dict[str, float] = {}
    if steady and timeline:
        # CPU of the whole tree from the first written shard to the end, per image after that first shard
        # (the driver's shutdown is in it too, so this slightly overstates the cost)
        startup = float(steady.group(1))
        _, cpu_at_start, by_pid_at_start = next((x for x in timeline if x[0] >= startup), timeline[-1])
        warm_images = max(1, images - shard_size)
        warm_cpu_ms = 1000 * (sum(cpu_by_pid.values()) - cpu_at_start) / warm_images
        for pid, cpu in cpu_by_pid.items():  # where that CPU went: workers, driver, Ray's servers
            kind = kind_by_pid.get(pid, "?")
            warm_by_kind[kind] = (
                warm_by_kind.get(kind, 0.0) + 1000 * (cpu - by_pid_at_start.get(pid, 0.0)) / warm_images
            )
    busy = re.search(r"per image: (.*)", out)
    return {
        "warm_cpu_ms": warm_cpu_ms,
        "warm_by_kind": warm_by_kind,
        "busy": busy.group(1) if busy else "",
        "wall": wall,
        "rate": rate,
        "startup": float(steady.group(1)) if steady else float("nan"),
        "steady": float(steady.group(2)) if steady else rate,
        "peak_pss": peak_pss,
        "peak_rss": peak_rss,
        "cpu": sum(cpu_by_pid.values()),
        "stdout": out.strip(),
    }


def naive_loop(
    model, processor, root: Path, ids: list[str], store_url: str, batch: int, shard: int, fingerprint: dict
) -> float:
    """(images/s, CPU s/image) of read + decode + preprocess -> encode_images -> write_shard, one process."""
    from sgeo.cache import FeatureStore
    from sgeo.model.tower_fingerprint import stored_towers
    from sgeo.pipeline.features import encode
    from sgeo.pipeline.images import content_hash, load_image

    towers = stored_towers(fingerprint)  # both towers in one store: the loop writes each shard once
    store = FeatureStore.create(
        store_url,
        image_ids=ids,
        paths=ids,
        fingerprint=fingerprint,
        shapes={"clip": tuple(towers["clip"]["shape"]), "moge": tuple(towers["moge"]["shape"])},
        shard_size=shard,
    )
    t, c = time.perf_counter(), time.process_time()
    for k in range(store.num_shards):
        rows = store.shard_rows(k)
        images, records = [], []
        for r in rows:
            image, data = load_image(root / ids[r])
            images.append(image)
            records.append(
                {
                    "status": "ok",
                    "error": None,
                    "content_hash": content_hash(data),
                    "width": image.width,
                    "height": image.height,
                }
            )
        pixels = processor.preprocess_images(images)
        clips, moges = [], []
        for i in range(0, len(rows), batch):
            with torch.inference_mode():
                clip, moge = model.encode_images(pixels[i : i + batch]).values()
            clips.append(encode(clip, "bf16"))
            moges.append(encode(moge, "bf16"))
        store.write_shard(k, {"clip": np.concatenate(clips), "moge": np.concatenate(moges)}, records)
    store.finalize()
    return len(ids) / (time.perf_counter() - t), (time.process_time() - c) / len(ids)


def bare_loop(model, pixels: torch.Tensor, batch: int) -> float:
    """(images/s, CPU s/image) of encode_images alone over pre-decoded pixels."""
    t, c = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for i in range(0, len(pixels), batch):
            model.encode_images(pixels[i : i + batch])
    return len(pixels) / (time.perf_counter() - t), (time.process_time() - c) / len(pixels)


def bench_model(
    name: str,
    model_arg: str,
    root: Path,
    n: int,
    batch: int,
    shard: int,
    threads: int,
    work: Path,
    extract_only: bool = False,
):
    from sgeo.model import load_model, resolve_model
    from sgeo.model.tower_fingerprint import towers_fingerprint
    from sgeo.pipeline.datasets import get_dataset
    from sgeo.pipeline.images import load_image

    ids = [ref.image_id for ref in get_dataset("synthetic", root).images()][:n]
    common = f"--dataset synthetic --batch-size {batch} --shard-size {shard} --num-cpus {threads}".split()
    common += ["--root", str(root), "--model", model_arg]
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n== {name}: {n} images, batch {batch}, shard {shard}, {threads} CPUs (load average {load})",
        flush=True,
    )
    ext = run_cli([*common, "--limit", str(n)], work / f"{name}-extract.zarr")
    print(
        f"extract: {ext['steady']:.2f} images/s once warm (whole job {ext['rate']:.2f} images/s, startup "
        f"{ext['startup']:.1f} s, wall {ext['wall']:.1f} s, {ext['cpu']:.0f} CPU-s in the process tree; "
        f"~{ext['warm_cpu_ms']:.0f} CPU-ms per image once warm)",
        flush=True,
    )
    if ext["warm_by_kind"]:
        parts = sorted(ext["warm_by_kind"].items(), key=lambda kv: -kv[1])
        print("extract CPU-ms per image once warm, by process: "
              + ", ".join(f"{kind} {ms:.0f}" for kind, ms in parts if ms >= 1), flush=True)  # fmt: skip
    if ext["busy"]:
        print(f"extract stages, {ext['busy']}", flush=True)
    if extract_only:
        return
    t = time.perf_counter()
    model, processor = load_model(model_arg)
    load_s = time.perf_counter() - t
    fingerprint = towers_fingerprint(resolve_model(model_arg), processor.preprocessing_spec(), "bf16")
    pixels = processor.preprocess_images([load_image(root / i)[0] for i in ids])
    naive, bare = {}, {}
    # one process cannot run two one-thread encoders: try 1 thread and every thread, keep the faster
    for t in sorted({1, threads}):
        torch.set_num_threads(t)
        naive[t] = naive_loop(
            model, processor, root, ids, str(work / f"{name}-naive-{t}.zarr"), batch, shard, fingerprint
        )
        bare[t] = bare_loop(model, pixels, batch)
        for what, (rate, cpu) in (("naive", naive[t]), ("bare", bare[t])):
            print(
                f"{what} ({t} thread{'s' if t > 1 else ''}): {rate:.2f} images/s, {1000 * cpu:.0f} CPU-ms/image",
                flush=True,
            )
    naive_rate, bare_rate = max(r for r, _ in naive.values()), max(r for r, _ in bare.values())
    print(f"(model load {load_s:.1f} s excluded from the loops)")
    print(
        f"ratios (images/s): extract/naive = {ext['steady'] / naive_rate:.2f} (goal >= 1.0), "
        f"extract/bare = {ext['steady'] / bare_rate:.2f} (goal >= 0.9 where encoders dominate)",
        flush=True,
    )
    del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny,vitb", help="comma-separated: tiny, vitb")
    parser.add_argument("--n-tiny", type=int, default=512)
    parser.add_argument("--n-vitb", type=int, default=24)
    parser.add_argument("--batch-tiny", type=int, default=16)
    parser.add_argument("--batch-vitb", type=int, default=3)
    parser.add_argument("--shard-tiny", type=int, default=64)
    parser.add_argument("--shard-vitb", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--rss-n", type=int, default=128, help="peak memory at N and 10N images (tiny); 0: skip"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--extract-only", action="store_true", help="only `sgeo extract` (no naive and bare loops)"
    )
    args = parser.parse_args()

    from sgeo.synthetic import generate_synthetic

    work = Path(tempfile.mkdtemp(prefix="sgeo-bench-extract-"))
    os.environ.setdefault("SGEO_HOME", str(work / "home"))  # a fresh tiny preset unless the caller has one
    try:
        models = args.models.split(",")
        n_data = max(
            [args.n_tiny if "tiny" in models else 0, args.n_vitb if "vitb" in models else 0, 10 * args.rss_n]
        )
        root = work / "synthetic"
        generate_synthetic(root, n_data, seed=0, n_eval=0)
        print(
            f"torch {torch.__version__}, {args.threads} threads, {psutil.cpu_count()} CPUs; work dir {work}"
        )
        if "tiny" in models:
            bench_model(
                "tiny",
                "tiny",
                root,
                args.n_tiny,
                args.batch_tiny,
                args.shard_tiny,
                args.threads,
                work,
                args.extract_only,
            )
        if "vitb" in models:
            model_dir = write_vitb(work / "vitb")
            bench_model(
                "vitb",
                str(model_dir),
                root,
                args.n_vitb,
                args.batch_vitb,
                args.shard_vitb,
                args.threads,
                work,
                args.extract_only,
            )
        if args.rss_n:
            print(
                f"\n== peak memory of `sgeo extract` (tiny, shard {args.shard_tiny}), process tree",
                flush=True,
            )
            for n in (args.rss_n, 10 * args.rss_n):
                args_n = ["--dataset", "synthetic", "--root", str(root), "--limit", str(n)]
                args_n += ["--shard-size", str(args.shard_tiny), "--batch-size", str(args.batch_tiny)]
                args_n += ["--num-cpus", str(args.threads)]
                res = run_cli(args_n, work / f"rss-{n}.zarr", memory=True)
                print(
                    f"{n:6d} images: peak PSS {res['peak_pss'] / 2**20:7.0f} MiB, peak RSS sum "
                    f"{res['peak_rss'] / 2**20:7.0f} MiB, wall {res['wall']:.1f} s",
                    flush=True,
                )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
