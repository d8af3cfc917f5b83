"""Training step time from the feature store against `--online` (encoders in the loop), and the fraction of
each step spent waiting for data. Prints figures; asserts nothing.

    python bench/train.py                                  # tiny preset, stage 1, 64 images, 24 steps
    python bench/train.py --stage 2 --batch-size 4 --steps 30

One process, same samples, order, seed and model for both runs: the synthetic dataset (224 px) is written
and its images are encoded once into a bf16 store (encode_images + `write_store`, the store `sgeo extract`
writes); then `run_train` (the real DeepSpeed recipe, ZeRO-2, CPU) trains from the store and again `--online`
from the image files, alternated `--repeats` times (medians reported; this machine is shared, so the
load average is printed too). Per step the recipe records its wall time and the time spent in `next(loader)`
(metrics.jsonl); the first `--warmup` steps (loader start, allocator warm-up) are left out.

Goals on the tiny preset: cached / online step time <= 0.5; data wait <= 5% of a cached step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_store(root: Path, store: str, model_name: str) -> None:
    """Every image of the dataset's stage-1 JSON in a bf16 store."""

    from sgeo.model import load_model, resolve_model
    from sgeo.model.tower_fingerprint import towers_fingerprint
    from sgeo.pipeline.images import load_image
    from sgeo.pipeline.names import SYNTHETIC_CAPTIONS
    from sgeo.pipeline.store_writer import write_store

    model, processor = load_model(model_name)
    ids = sorted({s["image"] for s in json.loads((root / SYNTHETIC_CAPTIONS).read_text())})
    fingerprint = towers_fingerprint(resolve_model(model_name), processor.preprocessing_spec(), "bf16")

    def encoded(rows: range) -> dict:  # a shard at a time: the pixels of every image are never held at once
        pixels = processor.preprocess_images([load_image(root / ids[r])[0] for r in rows])
        return model.encode_images(pixels)

    write_store(store, image_ids=ids, paths=[str(root / i) for i in ids], fingerprint=fingerprint,
                features=encoded, shapes=model.config.feature_shapes, dtype="bf16", shard_size=32)  # fmt: skip


def train_once(args, root: Path, store: str, out: Path, online: bool) -> dict:
    from sgeo.jobs.train import TrainConfig, run_train
    from sgeo.pipeline.names import SYNTHETIC_CAPTIONS, SYNTHETIC_QA

    data = root / (SYNTHETIC_CAPTIONS if args.stage == 1 else SYNTHETIC_QA)
    started = time.perf_counter()
    run_train(TrainConfig(
        stage=args.stage, data=data, store=store, out=out, model=args.model, online=online,
        image_root=root if online else None, batch_size=args.batch_size, grad_accum=1,
        max_steps=args.steps, save_every=10**9, num_workers=args.num_workers, seed=0,
        lora_r=8, lora_alpha=16,
    ))  # fmt: skip
    wall = time.perf_counter() - started
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][args.warmup :]
    step_s = [args.batch_size / m["samples_per_s"] for m in metrics]
    return {
        "median_step_s": statistics.median(step_s),
        "samples_per_s": args.batch_size / statistics.median(step_s),
        "data_wait": statistics.mean(m["data_wait"] for m in metrics),
        "data_wait_max": max(m["data_wait"] for m in metrics),
        "wall_s_incl_setup": wall,
        "steps_measured": len(metrics),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--n", type=int, default=64, help="synthetic training images")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=4, help="first steps left out of the figures")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="cached and online runs, alternated")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()

    from sgeo.pipeline.names import SYNTHETIC_CAPTIONS
    from sgeo.synthetic import generate_synthetic

    work = args.workdir or Path(tempfile.mkdtemp(prefix="sgeo-bench-train-"))
    root, store = work / "synthetic", str(work / "store.zarr")
    if not (root / SYNTHETIC_CAPTIONS).is_file():
        generate_synthetic(root, args.n, seed=0, n_eval=0)
    if not Path(store, "manifest.parquet").exists():
        build_store(root, store, args.model)
    import shutil

    runs = {"cached": [], "online": []}
    for _ in range(args.repeats):  # alternated, so both see the same background load
        for name, online in (("cached", False), ("online", True)):
            out = work / f"out-{name}-stage{args.stage}"
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append(train_once(args, root, store, out, online))
    results = {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()
    }
    for name, rs in runs.items():
        results[name]["median_step_s_per_repeat"] = [r["median_step_s"] for r in rs]
    ratio = results["cached"]["median_step_s"] / results["online"]["median_step_s"]
    summary = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "model": args.model, "stage": args.stage, "batch_size": args.batch_size, "num_workers": args.num_workers,
        "steps": args.steps, "warmup_left_out": args.warmup, "repeats": args.repeats, "cpus": len(os.sched_getaffinity(0)),
        "load_avg_1m": os.getloadavg()[0], **results, "cached_over_online": ratio,
        "goals": {"cached/online <= 0.5": ratio <= 0.5, "data wait <= 5%": results["cached"]["data_wait"] <= 0.05},
    }  # fmt: skip
    print(json.dumps(summary, indent=2))
    print(
        f"\nstep time  cached {results['cached']['median_step_s'] * 1e3:7.1f} ms   "
        f"online {results['online']['median_step_s'] * 1e3:7.1f} ms   cached/online {ratio:.3f}\n"
        f"data wait  cached {results['cached']['data_wait']:.1%}   online {results['online']['data_wait']:.1%}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
