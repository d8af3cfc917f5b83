"""One command for one CUDA GPU: what only a GPU can show, at the reference's shapes, in a few minutes. No
network; nothing read from disk but the packages (and the JPEGs it writes for `sgeo extract`). Prints one
table and writes it as JSON.

    python bench/gpu_check.py                                  # CUDA: ref-dims shapes, 7B-shaped LLM (32 layers)
    python bench/gpu_check.py --device cpu --preset tiny       # the same checks at tiny size (a test runs this)
    python bench/gpu_check.py --skip train,generate,4bit       # matmul, towers and `sgeo extract` only

Everything is random-init and built in memory on the device, from the shapes of a preset:
`ref-dims` (CLIP ViT-L/14-336 and MoGe ViT-L towers in fp32, as their releases are, a Llama-7B-shaped LLM of
--layers layers in bf16, LLaVA's SentencePiece tokenizer written to a temporary folder) or `tiny` (the tiny
preset's geometry and processor). The images are synthetic scenes at the preset's size.

0. matmul: a bf16 n x n x n product, the device's matrix rate: the yardstick of every MFU figure.
1. encode: `encode_images` of both towers under bf16 autocast (what `sgeo extract` does on a GPU), batch
   --encode-batch: images/s, against the bare towers (the same modules, which compute only the blocks kept,
   called as their libraries do: `CLIPVisionModel(x)` and DINOv2's `get_intermediate_layers(x, n=blocks,
   norm=True)`) on the same pixels: the ratio says what sgeo's road costs on top of the models; the towers'
   FLOPs per image (torch's counter) give their MFU.
1b. extract: --extract-images JPEGs at LLaVA-like sizes (640 x 480 and the like) through the real `sgeo extract`
   in a subprocess (a local Ray cluster on every CPU core, one GPU worker, --batch-size auto, the preset's
   towers, a bf16 store): images/s once warm over the bare towers' (>= 0.9 is the goal), and the summary's
   shares (towers busy, waiting for pixels, writing; decoding threads busy). Skipped, saying so, where Ray,
   zarr or moge is missing (README: carrying wheels); opt-in on CPU (--extract-images N).
2. train: stage 1 and stage 2 steps (LoRA r=128) on DeepSpeed with sgeo's own config (`deepspeed_config`:
   shipped ZeRO-2, bf16, one rank), gradient checkpointing as `sgeo train`, per attention implementation
   (sdpa, and flash_attention_2 where it is installed): per-device batch --stage1-batch / --stage2-batch
   (the reference's 32 and 16), samples/s, peak memory and MFU (4 FLOPs per LLM parameter per token), from
   cached features (bf16, as a store holds them) and online (pixels through the towers in the step); then
   without gradient checkpointing (cached), at that batch or the largest that fits, and the largest batch
   that fits with and without it, predicted from the peak memory of two batch sizes (CUDA).
3. loss: the same batch's stage-2 loss from cached features and from pixels, bf16, equal within --loss-tol.
4. generate: a left-padded batch of --gen-batch questions, greedy: tokens/s with the KV cache, and the same
   tokens without it: each token chosen with the cache must be the argmax of one cache-free forward over the
   whole sequence, up to --logit-tol (random bf16 weights have near ties that rounding may flip; free-running
   generation without the cache is compared too and reported, not checked).
5. 4-bit: where bitsandbytes is installed (CUDA only), the LLM quantized by `sgeo ask --load-4bit`'s own
   function and one question answered by `ask`'s `ImageChat`.

Timings synchronize the device before reading the clock; the first --warmup steps of each kind are left out.
Peak memory is `torch.cuda.max_memory_allocated` (reset before each measurement); on CPU, the process's RSS
after the measurement. Exit status 1 when a check fails (loss equality, KV-cache tokens, `sgeo extract`
failed, Ray imported into this process).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = (
    "How far is the red object from the blue one?",
    "Which object is closer to the camera?",
    "How tall is the tallest object?",
    "Is the green object to the left of the yellow object?",
    "What is the distance between the two largest objects in this image, in meters?",
    "Describe the scene briefly.",
    "How wide is the object in the middle?",
    "Which object is behind the others, and how far behind is it?",
)
ANSWER = "About 1.5 meters."
CAPTION = "A red box and a blue sphere on a gray floor."


# -- devices and clocks ----------------------------------------------------------------------------
def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int, warmup: int) -> list[float]:
    """Seconds of each of `repeats` calls of fn() after `warmup` calls, the device synchronized around each."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def reset_peak(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device) -> int:
    """Bytes: the device's peak allocation since `reset_peak` (CUDA), or this process's RSS now (CPU)."""
    import psutil
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(psutil.Process().memory_info().rss)


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


# -- the model, built in memory --------------------------------------------------------------------
def geometry_and_processor(preset: str, layers: int, workdir: Path):
    """(SpatialGeoConfig, processor) of a preset's shapes; nothing is written but a tokenizer (ref-dims)."""
    from sgeo.model.processing import SpatialGeoProcessor, build_image_processor, load_tokenizer

    if preset == "tiny":
        from sgeo.model import load_config, load_processor

        return load_config("tiny"), load_processor("tiny")
    from sgeo.model.random_init.configs import random_init_config
    from sgeo.model.random_init.sizes import ref_dims
    from sgeo.model.spm import write_llama_tokenizer

    sizes = ref_dims(layers)
    tokenizer = load_tokenizer(write_llama_tokenizer(workdir / "tokenizer", sizes.vocab_size))
    config = random_init_config(sizes)
    processor = SpatialGeoProcessor(build_image_processor(sizes.image_size), tokenizer, config.num_image_tokens,
                                    model_max_length=sizes.model_max_length, tokenization="llava")  # fmt: skip
    return config, processor


def build_towers(config, device):
    """Random-init fp32 towers on the device (the releases are fp32)."""
    import torch

    from sgeo.model.towers.stack import VisionTowers

    torch.manual_seed(1)
    with torch.device(device):  # no paths: built from the config, randomly initialised
        return VisionTowers(config.towers, dict.fromkeys(config.tower_names))


def build_model(config, device, attn: str, dtype, seed: int = 0):
    """A random-init SpatialGeo model (adapters + LLM) in `dtype` on the device, with `attn` attention."""
    import torch

    from sgeo.model.modeling import SpatialGeoForCausalLM

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialised in bf16 directly: a 7B fp32 copy never exists
    try:
        with torch.device(device):
            model = SpatialGeoForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.language_model.set_attn_implementation(attn)
    return model


def synthetic_images(n: int, size: int, seed: int = 0):
    import numpy as np

    from sgeo.synthetic import render_scene, sample_scene

    return [render_scene(sample_scene(np.random.default_rng([seed, i]), size, size)) for i in range(n)]


# -- 1. encode -------------------------------------------------------------------------------------
def check_encode(towers, pixels, device, args) -> dict:
    import torch

    def ours():
        return towers.encode_images(pixels)

    clip, moge = towers.towers["clip"], towers.towers["moge"]

    def bare():  # the libraries' own calls on the same (truncated) modules, nothing of sgeo's around them
        clip.model(pixels)
        moge.backbone.get_intermediate_layers(pixels, n=moge.blocks, norm=True)

    ours_s, bare_s = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        for _ in range(args.repeats):  # alternated, so both see the same clocks and caches
            ours_s += timed(ours, device, 1, args.warmup if not ours_s else 0)
            bare_s += timed(bare, device, 1, args.warmup if not bare_s else 0)
    n = pixels.shape[0]
    ours_rate, bare_rate = n / statistics.median(ours_s), n / statistics.median(bare_s)
    return {
        "batch": n,
        "images_per_s": ours_rate,
        "bare_images_per_s": bare_rate,
        "ratio": ours_rate / bare_rate,
    }


def check_matmul(device, args) -> dict:
    """The device's bf16 matrix rate: an n x n x n product (what the towers and the LLM are mostly made of),
    the yardstick of every MFU figure below."""
    import torch

    n = args.matmul_size or (8192 if device.type == "cuda" else 1024)
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    seconds = timed(lambda: a @ b, device, max(3, args.repeats), max(1, args.warmup))
    return {"n": n, "tflops": 2 * n**3 / statistics.median(seconds) / 1e12}


def towers_flops_per_image(towers, pixels) -> float:
    """FLOPs of one image through the towers, counted by torch's FLOP counter (matrix products and attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        towers.encode_images(pixels[:1])
    return float(counter.get_total_flops())


def llm_matmul_parameters(model) -> int:
    """Parameters of the LLM that multiply every token (the input embedding is a lookup, not a product)."""
    llm = model.language_model
    embedding = llm.get_input_embeddings().weight
    return sum(p.numel() for p in llm.parameters() if p is not embedding)


# -- 1b. extract, end to end -----------------------------------------------------------------------
EXTRACT_SIZES = (
    (640, 480),
    (480, 640),
    (640, 427),
    (500, 375),
    (640, 360),
    (427, 640),
    (336, 336),
    (800, 600),
)
# the sizes of LLaVA-1.5's training images (COCO, GQA, VG: mostly ~640 px on the long side, JPEG)


def write_jpegs(root: Path, n: int, distinct: int = 64) -> None:
    """n JPEGs (quality 90) at LLaVA-like sizes in a folder: `distinct` rendered scenes, each written as
    several files (decoding costs the same whatever the content repeats)."""
    import numpy as np

    from sgeo.synthetic import render_scene, sample_scene

    root.mkdir(parents=True, exist_ok=True)
    for k in range(distinct):
        w, h = EXTRACT_SIZES[k % len(EXTRACT_SIZES)]
        image = render_scene(sample_scene(np.random.default_rng([7, k]), w, h))
        for i in range(k, n, distinct):
            image.save(root / f"{i:06d}.jpg", quality=90)


def check_extract(args, workdir: Path, bare_rate: float) -> dict:
    """The real `sgeo extract` (its own local Ray cluster on every CPU core, one GPU worker, --batch-size
    auto, bf16 store) over --extract-images JPEGs, in a subprocess: images/s once warm against the bare
    towers measured in this process."""
    import importlib.util
    import re
    import subprocess

    missing = [m for m in ("ray", "zarr", "moge") if importlib.util.find_spec(m) is None]
    if missing:
        return {
            "skipped": f"no {', '.join(missing)} here: carry the wheels (README, 'A GPU machine without network')"
        }
    images, store = workdir / "jpegs", workdir / "stores"
    started = time.perf_counter()
    write_jpegs(images, args.extract_images)
    written = time.perf_counter() - started
    env = {**os.environ, "SGEO_HOME": str(args.extract_home or workdir / "home")}
    if args.preset == "ref-dims":
        env["SGEO_REF_DIMS_LAYERS"] = (
            "1"  # the towers are what runs; the preset's LLM is written, never loaded
        )
    command = [sys.executable, "-m", "sgeo.cli", "extract", "--dataset", "folder", "--root", str(images),
               "--store", str(store), "--model", args.preset, "--shard-size", str(args.extract_shard),
               "--batch-size", str(args.extract_batch)]  # fmt: skip
    if args.device_type == "cuda":
        command += ["--num-gpus", "1"]
    if args.extract_compile:
        command += ["--compile"]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode:
        return {"failed": (result.stderr or result.stdout)[-2000:], "command": " ".join(command)}
    out = result.stdout
    steady = re.search(r"startup \(.*?\) ([\d.]+) s, then ([\d.]+) images/s once warm", out)
    whole = float(re.search(r"; ([\d.]+) images/s;", out).group(1))
    rate = float(steady.group(2)) if steady else whole
    shares = re.search(r"(batch \d+: )?towers busy .*", out)
    return {"images": args.extract_images, "jpegs_written_s": written, "wall_s": wall,
            "startup_s": float(steady.group(1)) if steady else None, "images_per_s": rate,
            "whole_job_images_per_s": whole, "bare_images_per_s": bare_rate, "ratio": rate / bare_rate,
            "shares": shares.group(0) if shares else "", "summary": out.strip().splitlines(),
            "command": " ".join(command)}  # fmt: skip


# -- 2. train --------------------------------------------------------------------------------------
def training_batch(processor, stage: int, batch: int, features, pixels) -> dict:
    """A right-padded batch as the collator makes it, with cached features (bf16) and pixels."""
    import torch

    template = "plain" if stage == 1 else "vicuna_v1"
    samples = []
    for i in range(batch):
        human = "<image>\n" + ("Describe the image briefly." if stage == 1 else QUESTIONS[i % len(QUESTIONS)])
        answer = CAPTION if stage == 1 else ANSWER
        turns = [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]
        samples.append(processor.tokenize(turns, template))
    out = processor.pad(samples)
    index = (torch.arange(batch) % pixels.shape[0]).to(pixels.device)  # the images, repeated to fill
    out["image_features"] = {name: f[index] for name, f in features.items()}
    out["pixel_values"] = pixels[index]
    return out


def engine_for(model, stage: int, batch: int, attn: str, device, workdir: Path, checkpointing: bool = True):
    """sgeo's DeepSpeed engine for `stage`: its stage freezing, its config (ZeRO-2, bf16), one rank."""
    import deepspeed

    from sgeo.jobs.train.deepspeed_config import deepspeed_config
    from sgeo.jobs.train.recipe import TrainConfig, training_settings
    from sgeo.jobs.train.setup import checkpoint_activations
    from sgeo.model import LoraSettings, configure_stage

    configure_stage(model, stage, LoraSettings() if stage == 2 else None)  # stage 2: LoRA r=128, alpha 256
    if checkpointing:
        checkpoint_activations(model.language_model)  # as `sgeo train` does by default
    config = TrainConfig(stage=stage, data=workdir / "none.json", out=workdir / "out", store="none",
                         batch_size=batch, grad_accum=1, precision="bf16", attn=attn)  # fmt: skip
    settings = training_settings(config, world_size=1, device=device.type)
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=params,
                                      config=deepspeed_config(settings, model.config))  # fmt: skip
    model.train()
    return engine


def train_step(engine, batch: dict, device, online: bool):
    if online:  # the towers run in the step, as `sgeo train --online`
        features = engine.module.encode_images(batch["pixel_values"])
    else:
        features = {name: f.to(device) for name, f in batch["image_features"].items()}
    out = engine(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                 labels=batch["labels"].to(device), image_features=features, use_cache=False)  # fmt: skip
    engine.backward(out.loss)
    engine.step()
    return out.loss.detach().item()


def same_batch_losses(engine, batch: dict, device) -> tuple[float, float]:
    """Stage-2 loss of one batch from cached features and from pixels (dropout off)."""
    import torch

    engine.module.eval()
    common = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
              "labels": batch["labels"].to(device), "use_cache": False}  # fmt: skip
    with torch.no_grad():
        cached = engine(
            **common, image_features={n: f.to(device) for n, f in batch["image_features"].items()}
        ).loss
        online = engine(**common, pixel_values=batch["pixel_values"]).loss
    engine.module.train()
    return float(cached), float(online)


def release(engine=None) -> None:
    """Free an engine (DeepSpeed's hooks and buffers) and whatever is no longer referenced."""
    import torch

    if engine is not None:
        engine.destroy()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure(engine, batch: dict, device, args, online: bool) -> dict:
    """Median step time, samples/s and peak memory of `args.steps` steps (after `args.warmup`)."""
    reset_peak(device)
    losses = []
    seconds = timed(
        lambda: losses.append(train_step(engine, batch, device, online)), device, args.steps, args.warmup
    )
    step = statistics.median(seconds)
    size = batch["input_ids"].shape[0]
    return {
        "step_s": step,
        "samples_per_s": size / step,
        "peak_memory": peak_memory(device),
        "losses": losses,
    }


def set_checkpointing(model, on: bool) -> None:
    from sgeo.jobs.train.setup import checkpoint_activations

    if on:
        checkpoint_activations(model.language_model)
    else:
        model.language_model.gradient_checkpointing_disable()


def memory_line(
    engine, processor, stage, sizes, features, pixels, device, args
) -> tuple[float, float] | None:
    """(bytes per sample, fixed bytes) of a training step's peak memory, from one step at each of two batch
    sizes (peak = fixed + batch x per sample); None off CUDA (RSS says nothing of a step's own memory)."""
    if device.type != "cuda":
        return None
    peaks = []
    for size in sizes:
        batch = training_batch(processor, stage, size, features, pixels)
        reset_peak(device)
        train_step(engine, batch, device, online=False)
        sync(device)
        peaks.append(peak_memory(device))
    per_sample = max(1.0, (peaks[1] - peaks[0]) / (sizes[1] - sizes[0]))
    return per_sample, peaks[0] - sizes[0] * per_sample


def largest_batch(line, device, fill: float = 0.92) -> int | None:
    """The largest batch whose predicted peak fits in `fill` of the device's memory (None: not measured)."""
    import torch

    if line is None:
        return None
    per_sample, fixed = line
    total = torch.cuda.get_device_properties(device).total_memory
    return max(0, int((fill * total - fixed) // per_sample))


def mfu(row: dict, llm_params: int, tflops: float) -> float:
    """Model FLOPs utilisation of a measured step: 4 FLOPs per LLM parameter per token (the forward's 2, and
    the backward's 2 for the activations' gradients: the LLM's weights are frozen, or LoRA's few in stage 2;
    recomputation is not counted, attention's quadratic term neither), over the measured matrix rate."""
    flops = 4 * llm_params * row["batch"] * row["sequence"]
    return flops / row["step_s"] / (tflops * 1e12)


def check_train(config, processor, towers, features, pixels, device, args, workdir: Path,
                tflops: float) -> tuple[list, dict]:  # fmt: skip
    """Per attention implementation and stage: steps with gradient checkpointing on (as `sgeo train`) from
    cached features and online, and off (cached), each with samples/s, peak memory and MFU; and the largest
    batch that fits each way, predicted from the peak memory of two batch sizes (CUDA)."""
    import torch

    rows, losses = [], {}
    for attn in args.attn:
        for stage, batch_size in ((1, args.stage1_batch), (2, args.stage2_batch)):
            model = build_model(config, device, attn, torch.bfloat16)
            model.towers = copy.deepcopy(towers)  # fp32; DeepSpeed's bf16 mode casts the module's copy
            params = llm_matmul_parameters(model)
            batch = training_batch(processor, stage, batch_size, features, pixels)
            engine = engine_for(model, stage, batch_size, attn, device, workdir)
            row = {"stage": stage, "attn": attn, "batch": batch_size, "sequence": int(batch["input_ids"].shape[1]),
                   "llm_params": params}  # fmt: skip
            row["cached"] = measure(engine, batch, device, args, online=False)
            row["online"] = measure(engine, batch, device, args, online=True)
            row["cached_over_online"] = row["cached"]["step_s"] / row["online"]["step_s"]
            row["cached"]["mfu"] = mfu({**row, **row["cached"]}, params, tflops)
            if stage == 2 and not losses:
                losses = dict(
                    zip(("cached", "online"), same_batch_losses(engine, batch, device), strict=True)
                )
                losses["attn"] = attn
            if not args.no_batch_search:
                half = max(1, batch_size // 2)
                line = memory_line(engine, processor, stage, (half, batch_size) if half < batch_size else (1, 2),
                                   features, pixels, device, args)  # fmt: skip
                row["largest_batch_checkpointing"] = largest_batch(line, device)
                # without checkpointing: memory grows faster per sample; measured at small batches first
                set_checkpointing(engine.module, False)
                line = memory_line(engine, processor, stage, (1, 2), features, pixels, device, args)
                fits = largest_batch(line, device)
                row["largest_batch_no_checkpointing"] = fits
                if line is not None:  # what `sgeo train --gradient-checkpointing auto` plans from such a line
                    from sgeo.jobs.train.memory_plan import StepMemory, plan_memory

                    plan = plan_memory(batch_size, 1, StepMemory(fixed=line[1], per_sample=line[0]),
                                       torch.cuda.get_device_properties(device).total_memory, row["sequence"])  # fmt: skip
                    row["auto_plan"] = plan.reason
                off = batch_size if fits is None else min(batch_size, fits)
                if off >= 1:
                    off_batch = training_batch(processor, stage, off, features, pixels)
                    try:
                        measured = measure(engine, off_batch, device, args, online=False)
                    except torch.OutOfMemoryError:  # the prediction was off: say so, keep the other figures
                        measured = {"oom": True}
                    measured.update(batch=off, sequence=int(off_batch["input_ids"].shape[1]))
                    if "step_s" in measured:
                        measured["mfu"] = mfu(measured, params, tflops)
                    row["no_checkpointing"] = measured
            rows.append(row)
            release(engine)
            engine = model = None
            release()
    return rows, losses


# -- 4. generate -----------------------------------------------------------------------------------
def check_generate(config, processor, features, device, args) -> dict:
    import torch

    model = build_model(config, device, args.attn[0], torch.bfloat16, seed=3).eval()
    samples = [processor.tokenize([{"from": "human", "value": f"<image>\n{q}"}], "vicuna_v1", add_generation_prompt=True)
               for q in (QUESTIONS * args.gen_batch)[: args.gen_batch]]  # fmt: skip
    batch = processor.pad(samples, padding_side="left")  # [B, N], the shorter prompts padded on the left
    first = next(iter(features.values()))
    index = (torch.arange(args.gen_batch) % first.shape[0]).to(first.device)
    common = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
              "image_features": {name: f[index].to(device) for name, f in features.items()},
              "do_sample": False, "pad_token_id": processor.tokenizer.pad_token_id}  # fmt: skip

    def generate(use_cache: bool, tokens: int):
        return model.generate(**common, max_new_tokens=tokens, min_new_tokens=tokens, use_cache=use_cache)

    reset_peak(device)
    seconds = timed(lambda: generate(True, args.new_tokens), device, 1, 1)[0]
    memory = peak_memory(device)
    with_cache = generate(True, args.compare_tokens)  # [B, K]
    without = generate(False, args.compare_tokens)
    margins = argmax_margins(model, common, with_cache, processor.tokenizer.eos_token_id)  # [B, K]
    first = (with_cache != without).flatten().nonzero()
    result = {"batch": args.gen_batch, "prompt_tokens": int(batch["input_ids"].shape[1]), "new_tokens": args.new_tokens,
              "tokens_per_s": args.gen_batch * args.new_tokens / seconds, "seconds": seconds, "peak_memory": memory,
              "compared_tokens": args.compare_tokens, "max_margin": float(margins.max()),
              "tokens_within_tol": int((margins <= args.logit_tol).sum()), "tokens_compared": margins.numel(),
              "same_tokens_without_cache": bool(torch.equal(with_cache, without)),
              "first_difference": int(first[0]) if len(first) else None}  # fmt: skip
    model = None
    release()
    return result


def argmax_margins(model, common: dict, new_tokens, eos: int):
    """For each token generated with the KV cache, how far its logit is below the best one of a single forward
    over the whole sequence without a cache (0: it is that forward's argmax; bf16 rounding moves near ties).
    EOS is left out of the best, as `min_new_tokens` left it out of the choice."""
    import torch

    prompt, mask = common["input_ids"], common["attention_mask"]
    with torch.no_grad():
        # the prompt as generate embeds it, then the new tokens as plain tokens (a new token may be the id of
        # `<image>` where that id is in the vocabulary, as in the tiny preset's)
        prompt_embeds = model.embed_inputs(prompt, image_features=common["image_features"])  # [B, P, H]
        embeds = torch.cat([prompt_embeds, model.get_input_embeddings()(new_tokens)], dim=1)  # [B, P + K, H]
        full_mask = torch.cat([mask, torch.ones_like(new_tokens)], dim=1)
        logits = model.language_model(
            inputs_embeds=embeds, attention_mask=full_mask, use_cache=False
        ).logits.float()
    chooser = logits[:, prompt.shape[1] - 1 : -1]  # [B, K, V]: the logits each new token was chosen from
    if eos is not None:
        chooser[..., eos] = float("-inf")
    return chooser.max(-1).values - chooser.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)


# -- 5. 4-bit --------------------------------------------------------------------------------------
def check_4bit(config, processor, towers, image, device, args) -> dict:
    import importlib.util

    import torch

    if device.type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "needs CUDA and bitsandbytes"}
    from sgeo.inference.image_chat import ImageChat
    from sgeo.model.quantization import quantize_language_model

    reset_peak(device)
    model = build_model(config, device, args.attn[0], torch.float16, seed=4)
    quantize_language_model(model, 4, str(device))  # what `sgeo ask --load-4bit` does after loading
    model.towers = towers
    model.eval()
    chat = ImageChat(model, processor, image)
    answer = chat.ask(QUESTIONS[0], temperature=0.0, max_new_tokens=args.new_tokens)
    result = {"tokens": answer["tokens"], "seconds": answer["seconds"], "peak_memory": peak_memory(device),
              "answer": answer["answer"][:80]}  # fmt: skip
    del chat, model
    release()
    return result


# -- the table -------------------------------------------------------------------------------------
def table(result: dict) -> str:
    e, m, lines = result["encode"], result["matmul"], []
    lines.append(f"device {result['device']} ({result['device_name']}), preset {result['preset']}, LLM layers "
                 f"{result['layers']}, torch {result['torch']}, {result['seconds']:.0f} s")  # fmt: skip
    lines.append(f"{'check':<34} result")
    lines.append("-" * 100)
    lines.append(
        f"{'matmul, bf16, ' + str(m['n']) + '^3':<34} {m['tflops']:8.1f} TFLOP/s (the yardstick of the MFU figures)"
    )
    lines.append(f"{'encode, bf16 autocast, batch ' + str(e['batch']):<34} {e['images_per_s']:8.1f} images/s (both "
                 f"towers); bare towers {e['bare_images_per_s']:.1f} images/s; ratio {e['ratio']:.3f}; "
                 f"{e['tflop_per_image']:.3f} TFLOP/image: MFU {100 * e['mfu']:.1f}%")  # fmt: skip
    x = result["extract"]
    if "images_per_s" in x:
        lines.append(f"{'sgeo extract (Ray), ' + str(x['images']) + ' JPEGs':<34} {x['images_per_s']:8.1f} images/s once "
                     f"warm (whole job {x['whole_job_images_per_s']:.1f}, startup {x['startup_s'] or 0:.0f} s); / bare "
                     f"towers = {x['ratio']:.3f}")  # fmt: skip
        if x["shares"]:
            lines.append(f"{'':<34} {x['shares']}")
    else:
        lines.append(f"{'sgeo extract (Ray)':<34} {x.get('skipped') or 'FAILED: ' + x['failed'][-300:]}")
    for row in result.get("train", []):
        c, o = row["cached"], row["online"]
        name = f"stage {row['stage']} {row['attn']}, batch {row['batch']} x {row['sequence']}"
        lines.append(f"{name:<34} cached {c['samples_per_s']:7.2f} samples/s ({c['step_s']:.3f} s/step, peak "
                     f"{gib(c['peak_memory'])}, MFU {100 * c['mfu']:.1f}%); online {o['samples_per_s']:7.2f} samples/s "
                     f"(peak {gib(o['peak_memory'])}); cached/online step {row['cached_over_online']:.2f}")  # fmt: skip
        off = row.get("no_checkpointing")
        if off is not None:
            what = ("out of memory" if off.get("oom") else
                    f"{off['samples_per_s']:.2f} samples/s (peak {gib(off['peak_memory'])}, MFU {100 * off['mfu']:.1f}%)")  # fmt: skip
            lines.append(f"{'  no checkpointing, batch ' + str(off['batch']):<34} {what}; largest batch that fits: "
                         f"{row['largest_batch_checkpointing']} with checkpointing, "
                         f"{row['largest_batch_no_checkpointing']} without (predicted from peak memory)")  # fmt: skip
        if "auto_plan" in row:
            lines.append(f"{'  sgeo train, checkpointing auto':<34} {row['auto_plan']}")
    if "loss" in result:
        loss = result["loss"]
        lines.append(f"{'loss, same batch, bf16':<34} cached {loss['cached']:.5f}, online {loss['online']:.5f}, "
                     f"|diff| {abs(loss['cached'] - loss['online']):.5f} (tol {result['loss_tol']}): "
                     f"{'ok' if result['checks']['loss_equal'] else 'FAIL'}")  # fmt: skip
    if "generate" in result:
        g = result["generate"]
        lines.append(f"{'generate, greedy, left-padded':<34} batch {g['batch']} x {g['prompt_tokens']} prompt tokens: "
                     f"{g['tokens_per_s']:.1f} tokens/s with the KV cache (peak {gib(g['peak_memory'])})")  # fmt: skip
        free_run = "same" if g["same_tokens_without_cache"] else f"first differs at {g['first_difference']}"
        lines.append(f"{'KV cache vs none':<34} {g['tokens_within_tol']} of {g['tokens_compared']} cached tokens are the "
                     f"cache-free argmax within {result['logit_tol']} (max margin {g['max_margin']:.4f}); free-running "
                     f"without the cache: {free_run}")  # fmt: skip
    if "4bit" in result:
        q = result["4bit"]
        detail = (
            q.get("skipped") or f"{q['tokens']} tokens in {q['seconds']:.2f} s, peak {gib(q['peak_memory'])}"
        )
        lines.append(f"{'ask --load-4bit':<34} {detail}")
    lines.append(
        f"{'checks':<34} " + ", ".join(f"{k} {'ok' if v else 'FAIL'}" for k, v in result["checks"].items())
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--preset", default="ref-dims", choices=("ref-dims", "tiny"))
    parser.add_argument("--layers", type=int, default=32, help="ref-dims LLM layers (32: Vicuna-7B's)")
    parser.add_argument("--encode-batch", type=int, default=32)
    parser.add_argument(
        "--stage1-batch", type=int, default=None, help="default: 32 on CUDA (the reference), 4 on CPU"
    )
    parser.add_argument(
        "--stage2-batch", type=int, default=None, help="default: 16 on CUDA (the reference), 2 on CPU"
    )
    parser.add_argument("--steps", type=int, default=3, help="measured steps of each kind")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="measured encode calls")
    parser.add_argument(
        "--attn", nargs="*", default=None, help="default: sdpa, and flash_attention_2 if installed"
    )
    parser.add_argument("--gen-batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--compare-tokens", type=int, default=16, help="tokens compared with and without the cache"
    )
    parser.add_argument(
        "--logit-tol", type=float, default=0.1, help="bf16: a cached token's logit below the best"
    )
    parser.add_argument("--loss-tol", type=float, default=0.05, help="|cached - online| loss, bf16")
    parser.add_argument(
        "--matmul-size", type=int, default=None, help="n of the bf16 n^3 product (8192 CUDA, 1024 CPU)"
    )
    parser.add_argument(
        "--extract-images",
        type=int,
        default=None,
        help="JPEGs through the real `sgeo extract` (Ray; default 2048 on CUDA, 0: skipped on CPU)",
    )
    parser.add_argument(
        "--extract-batch", default=None, help="its --batch-size (default: auto on CUDA, 16 on CPU)"
    )
    parser.add_argument("--extract-shard", type=int, default=256, help="its --shard-size")
    parser.add_argument(
        "--extract-compile", action="store_true", help="its --compile (torch.compile the towers)"
    )
    parser.add_argument(
        "--extract-home",
        type=Path,
        default=None,
        help="SGEO_HOME for its preset (default: a fresh one; a kept one skips writing the preset)",
    )
    parser.add_argument(
        "--no-batch-search",
        action="store_true",
        help="skip the largest-batch and no-checkpointing measurements",
    )
    parser.add_argument(
        "--skip", default="", help="comma-separated sections to skip: extract, train, generate, 4bit"
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()

    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA GPU is visible; use --device cpu")
    if device.type == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"  # before deepspeed is imported
    cuda = device.type == "cuda"
    args.stage1_batch = args.stage1_batch or (32 if cuda else 4)
    args.stage2_batch = args.stage2_batch or (16 if cuda else 2)
    args.extract_images = (2048 if cuda else 0) if args.extract_images is None else args.extract_images
    args.extract_batch = args.extract_batch or ("auto" if cuda else "16")
    args.device_type = device.type
    skip = {x for x in args.skip.split(",") if x}
    if args.attn is None:
        import importlib.util

        args.attn = ["sdpa"] + (
            ["flash_attention_2"] if cuda and importlib.util.find_spec("flash_attn") else []
        )
    started = time.perf_counter()

    from sgeo.jobs.train.environment import prepare_environment

    prepare_environment()  # one rank, no launcher
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    workdir = Path(tempfile.mkdtemp(prefix="sgeo-gpu-check-"))
    config, processor = geometry_and_processor(args.preset, args.layers, workdir)
    images = synthetic_images(args.encode_batch, config.image_size)
    pixels = processor.preprocess_images(images).to(device)  # [B, 3, S, S]
    towers = build_towers(config, device)

    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
              "preset": args.preset, "layers": config.text_config.num_hidden_layers, "torch": torch.__version__,
              "loss_tol": args.loss_tol, "logit_tol": args.logit_tol, "attn": args.attn}  # fmt: skip
    result["matmul"] = check_matmul(device, args)
    result["encode"] = check_encode(towers, pixels, device, args)
    flops = towers_flops_per_image(towers, pixels)
    result["encode"]["tflop_per_image"] = flops / 1e12
    result["encode"]["mfu"] = result["encode"]["images_per_s"] * flops / (result["matmul"]["tflops"] * 1e12)
    if args.extract_images and "extract" not in skip:
        result["extract"] = check_extract(args, workdir, result["encode"]["bare_images_per_s"])
    else:
        result["extract"] = {"skipped": "--extract-images 0" if not args.extract_images else "--skip extract"}
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        encoded = towers.encode_images(pixels)  # what a bf16 store holds
    features = {name: f.to(torch.bfloat16).clone() for name, f in encoded.items()}
    checks = {}
    if "train" not in skip:
        result["train"], result["loss"] = check_train(
            config, processor, towers, features, pixels, device, args, workdir, result["matmul"]["tflops"]
        )
        checks["loss_equal"] = abs(result["loss"]["cached"] - result["loss"]["online"]) <= args.loss_tol
    if "generate" not in skip:
        result["generate"] = check_generate(config, processor, features, device, args)
        checks["kv_cache_tokens"] = (
            result["generate"]["tokens_within_tol"] == result["generate"]["tokens_compared"]
        )
    if "4bit" not in skip:
        result["4bit"] = check_4bit(config, processor, towers, images[0], device, args)
    if "failed" in result["extract"]:
        checks["extract"] = False
    checks["no_ray"] = "ray" not in sys.modules  # the in-process checks need no Ray (extract runs in its own)
    result["checks"] = checks
    result["seconds"] = time.perf_counter() - started
    print(table(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    deepspeed.comm.destroy_process_group()
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
