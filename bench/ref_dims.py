"""The whole pipeline at the reference's shapes and dtypes, on CPU: a rehearsal before anyone spends GPU time.
Prints figures; asserts nothing.

    python bench/ref_dims.py                         # 32 images at 384 px, ref-dims preset with a 2-layer LLM
    python bench/ref_dims.py --layers 4 --workdir runs/ref-dims

Every job is the real `sgeo` CLI in a subprocess, in this order, with bf16 wherever the GPU recipe uses it:

    preset   the `ref-dims` preset written once under $SGEO_HOME (CLIP ViT-L/14-336, MoGe ViT-L, a bf16
             Llama-7B-shaped LLM with --layers layers, LLaVA's tokenizer); skipped when already there
    data     sgeo data synthetic --n 32 --image-size 384
    extract  sgeo extract --precision bf16 (bf16 store: 576 x 1024 CLIP + 4 x 576 x 1024 MoGe per image)
    stage1   sgeo train --stage 1 --precision bf16 (a few steps, LLM frozen, MoGe adapters train)
    stage2   sgeo train --stage 2 --precision bf16 --lora-r 128 --merge-lora (a few steps, adapters + LoRA)
    eval     sgeo eval --bench synthetic --limit 8 --precision bf16 (one batch of 8, the merged model)
    ask      sgeo ask IMAGE QUESTION --json --precision bf16

Per job: wall seconds, the peak memory of its whole process tree (sampled every 0.2 s with psutil: RSS
summed over the processes, which counts pages they share more than once, and PSS, which counts them once;
the Ray object store of `extract` lives in /dev/shm), and the load average when it started. Then the store's
bytes per image (`sgeo cache info`), the visual tokens of a tokenized training sample (1152 = 2 x 576) and the
longest training sequence of each stage, with how many samples have any supervised token.

Stage 2 trains on the full multi-round synthetic conversations, tokenized as LLaVA does (its round-length
rule for `legacy: false` tokenizers lines up on the preset's SentencePiece vocabulary as on Vicuna's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

QUESTION = "How far is the red object from the camera?"


class TreeSampler:
    """Peak RSS and PSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0
        for proc in procs:
            try:
                info = proc.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            except psutil.Error:
                pass
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, len(procs))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_job(name: str, args: list[str], log_dir: Path, env: dict) -> dict:
    """One command; its output goes to log_dir/<name>.log. Raises with the log's tail if it fails."""
    log = log_dir / f"{name}.log"
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
        sampler = TreeSampler(proc.pid)
        code = proc.wait()
        sampler.stop()
    seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"job {name} failed (exit {code}); {log}:\n{tail}")
    return {"job": name, "seconds": seconds, "peak_rss": sampler.peak_rss, "peak_pss": sampler.peak_pss,
            "processes": sampler.peak_procs, "load_1m": load, "log": str(log)}  # fmt: skip


def sgeo(*args) -> list[str]:
    return [sys.executable, "-m", "sgeo.cli", *map(str, args)]


def token_figures(model_dir: str, data: Path, template: str) -> dict:
    """Visual tokens per sample, the longest sequence and the samples with a supervised token, as the trainer
    tokenizes them (the model's own processor)."""
    from sgeo.model import load_processor
    from sgeo.model.conversation import IGNORE_INDEX

    processor = load_processor(model_dir)
    lengths, visual, supervised = [], set(), 0
    for sample in json.loads(data.read_text()):
        tokens = processor.tokenize(sample["conversations"], template)
        lengths.append(len(tokens["input_ids"]))
        visual.add(sum(t == processor.image_token_id for t in tokens["input_ids"]))
        supervised += any(label != IGNORE_INDEX for label in tokens["labels"])
    return {"samples": len(lengths), "longest": max(lengths), "visual_tokens": sorted(visual),
            "supervised_samples": supervised, "model_max_length": processor.model_max_length}  # fmt: skip


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--layers", type=int, default=2, help="LLM layers of the ref-dims preset")
    parser.add_argument("--n", type=int, default=32, help="training images")
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--eval-items", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32, help="eval and ask: new tokens per answer")
    parser.add_argument("--stage1-steps", type=int, default=3)
    parser.add_argument("--stage2-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2, help="per step (global batch), both stages")
    parser.add_argument("--shard-size", type=int, default=16, help="store shard: 2 shards, 2 encoder actors")
    args = parser.parse_args()

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="sgeo-ref-dims-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    env = {**os.environ, "SGEO_REF_DIMS_LAYERS": str(args.layers), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    env.setdefault("SGEO_HOME", str(work / "home"))
    os.environ.update(env)  # the token figures below resolve the same preset
    from sgeo.pipeline.names import SYNTHETIC_BENCH, SYNTHETIC_CAPTIONS, SYNTHETIC_EVAL, SYNTHETIC_QA

    data, store = work / "data", work / "store.zarr"
    captions, qa = data / SYNTHETIC_CAPTIONS, data / SYNTHETIC_QA
    stage1, stage2, evaluation = work / "stage1", work / "stage2", work / "eval"
    train = ["--batch-size", args.batch_size, "--grad-accum", 1, "--precision", "bf16", "--num-workers", 1]
    jobs = [
        ("preset", [sys.executable, "-c", "from sgeo.model import resolve_model_dir; resolve_model_dir('ref-dims')"]),
        ("data", sgeo("data", "synthetic", "--out", data, "--n", args.n, "--n-eval", max(2, args.eval_items // 4),
                      "--image-size", args.image_size)),
        ("extract", sgeo("extract", "--dataset", "synthetic", "--root", data, "--store", store, "--model", "ref-dims",
                         "--dtype", "bf16", "--precision", "bf16", "--shard-size", args.shard_size,
                         "--batch-size", 8, "--num-cpus", len(os.sched_getaffinity(0)))),
        ("stage1", sgeo("train", "--stage", 1, "--model", "ref-dims", "--data", captions,
                        "--store", store, "--out", stage1, "--max-steps", args.stage1_steps, *train)),
        ("stage2", sgeo("train", "--stage", 2, "--model", stage1, "--data", qa, "--store", store,
                        "--out", stage2, "--max-steps", args.stage2_steps, "--lora-r", 128, "--lora-alpha", 256,
                        "--merge-lora", *train)),
        ("eval", sgeo("eval", "--bench", "synthetic", "--data", data / SYNTHETIC_EVAL / SYNTHETIC_BENCH, "--model",
                      stage2 / "merged", "--out", evaluation, "--limit", args.eval_items, "--batch-size",
                      args.eval_items, "--precision", "bf16", "--max-new-tokens", args.new_tokens)),
        ("ask", sgeo("ask", data / "eval" / "images" / "000000.png", QUESTION, "--model", stage2 / "merged",
                     "--json", "--temperature", 0, "--max-new-tokens", args.new_tokens, "--precision", "bf16")),
    ]  # fmt: skip
    from sgeo.model.presets import ref_dims_version, sgeo_home

    for stale in (data, store, stage1, stage2, evaluation):  # a rerun in the same workdir starts over
        shutil.rmtree(stale, ignore_errors=True)
    written = (sgeo_home() / "presets" / ref_dims_version()).is_dir()
    started = time.perf_counter()
    rows, figures = [], {}
    for name, command in jobs:
        if name == "preset" and written:
            continue
        print(f"[ref-dims] {name} ...", file=sys.stderr, flush=True)
        row = run_job(name, [str(c) for c in command], logs, env)
        rows.append(row)
        if name == "extract":
            info = json.loads(subprocess.run(sgeo("cache", "info", store, "--json"), env=env, check=True,
                                             capture_output=True, text=True).stdout)  # fmt: skip
            row["bytes_per_image"] = info["bytes_per_image"]
            figures["store"] = {k: info[k] for k in ("bytes", "bytes_per_image", "raw_bytes_per_image", "dtype",
                                                      "arrays", "num_rows")}  # fmt: skip
        if name in ("stage1", "stage2"):
            template = "plain" if name == "stage1" else "vicuna_v1"
            source = "ref-dims" if name == "stage1" else str(stage1)
            tokens = token_figures(source, captions if name == "stage1" else qa, template)
            metrics = [json.loads(line) for line in (work / name / "metrics.jsonl").read_text().splitlines()]
            tokens["losses"] = [m["loss"] for m in metrics]
            tokens["step_seconds"] = [args.batch_size / m["samples_per_s"] for m in metrics]
            row["visual_tokens"], row["longest_sequence"] = tokens["visual_tokens"], tokens["longest"]
            figures[name] = tokens
        if name == "eval":
            answers = [json.loads(line) for line in (evaluation / "answers.jsonl").read_text().splitlines()]
            figures["eval"] = {"items": len(answers), "answered": sum(not a.get("skipped") and not a.get("error")
                                                                      for a in answers)}  # fmt: skip
        if name == "ask":
            figures["ask"] = json.loads((logs / "ask.log").read_text().strip().splitlines()[-1])
    total = time.perf_counter() - started

    print(f"\nref-dims pipeline on CPU ({len(os.sched_getaffinity(0))} cores), LLM layers {args.layers}, "
          f"{args.n} images at {args.image_size} px; workdir {work}")  # fmt: skip
    head = f"{'job':<8} {'seconds':>8} {'peak RSS GiB':>13} {'peak PSS GiB':>13} {'load':>5}  notes"
    print(head + "\n" + "-" * len(head))
    for row in rows:
        notes = []
        if "bytes_per_image" in row:
            notes.append(f"{row['bytes_per_image'] / 1e6:.3f} MB/image")
        if "visual_tokens" in row:
            notes.append(f"{'/'.join(map(str, row['visual_tokens']))} visual tokens/sample, "
                         f"longest sequence {row['longest_sequence']}")  # fmt: skip
        print(f"{row['job']:<8} {row['seconds']:8.1f} {gib(row['peak_rss']):>13} {gib(row['peak_pss']):>13} "
              f"{row['load_1m']:5.1f}  {'; '.join(notes)}")  # fmt: skip
    setup = sum(row["seconds"] for row in rows if row["job"] == "preset")
    print(
        f"{'total':<8} {total:8.1f}"
        + (f"  ({total - setup:.1f} without writing the preset)" if setup else "")
    )
    for name in ("stage1", "stage2"):
        if name in figures:
            f = figures[name]
            print(f"{name}: losses {[f'{x:.4f}' for x in f['losses']]}, step seconds "
                  f"{[f'{x:.1f}' for x in f['step_seconds']]}, {f['supervised_samples']} of {f['samples']} "
                  "samples supervised")  # fmt: skip
    if "eval" in figures:
        print(f"eval: {figures['eval']['answered']} of {figures['eval']['items']} items answered")
    if "ask" in figures:
        print(f"ask: {figures['ask']}")
    summary = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "cpus": len(os.sched_getaffinity(0)),
               "layers": args.layers, "total_seconds": total, "jobs": rows, "figures": figures}  # fmt: skip
    (work / "ref_dims.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"written {work / 'ref_dims.json'}")


if __name__ == "__main__":
    main()
