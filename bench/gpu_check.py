"""One command for one CUDA GPU: what only a GPU can show, at the reference's shapes, in a few minutes. No
network, no Ray, nothing read from disk but the packages. Prints one table and writes it as JSON.

    python bench/gpu_check.py                                  # CUDA: ref-dims shapes, 7B-shaped LLM (32 layers)
    python bench/gpu_check.py --device cpu --preset tiny       # the same checks at tiny size (a test runs this)

Everything is random-init and built in memory on the device, from the shapes of a preset:
`ref-dims` (CLIP ViT-L/14-336 and MoGe ViT-L towers in fp32, as their releases are, a Llama-7B-shaped LLM of
--layers layers in bf16, LLaVA's SentencePiece tokenizer written to a temporary folder) or `tiny` (the tiny
preset's geometry and processor). The images are synthetic scenes at the preset's size.

1. encode: `encode_images` of both towers under bf16 autocast (what `sgeo extract` does on a GPU), batch
   --encode-batch: images/s, against the bare towers (`CLIPVisionModel(..., output_hidden_states=True)` and
   DINOv2's `get_intermediate_layers(x, n=4, norm=True)`) on the same pixels: the ratio says what sgeo's road
   costs on top of the models.
2. train: stage 1 and stage 2 steps (LoRA r=128) on DeepSpeed with sgeo's own config (`deepspeed_config`:
   shipped ZeRO-2, bf16, one rank), gradient checkpointing as `sgeo train`, per attention implementation
   (sdpa, and flash_attention_2 where it is installed): per-device batch --stage1-batch / --stage2-batch
   (the reference's 32 and 16), samples/s and peak memory, from cached features (bf16, as a store holds
   them) and online (pixels through the towers in the step).
3. loss: the same batch's stage-2 loss from cached features and from pixels, bf16, equal within --loss-tol.
4. generate: a left-padded batch of --gen-batch questions, greedy: tokens/s with the KV cache, and the same
   tokens without it: each token chosen with the cache must be the argmax of one cache-free forward over the
   whole sequence, up to --logit-tol (random bf16 weights have near ties that rounding may flip; free-running
   generation without the cache is compared too and reported, not checked).
5. 4-bit: where bitsandbytes is installed (CUDA only), the LLM quantized by `sgeo ask --load-4bit`'s own
   function and one question answered by `ask`'s `ImageChat`.

Timings synchronize the device before reading the clock; the first --warmup steps of each kind are left out.
Peak memory is `torch.cuda.max_memory_allocated` (reset before each measurement); on CPU, the process's RSS
after the measurement. Exit status 1 when a check fails (loss equality, KV-cache tokens, Ray imported).
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
    from sgeo.model.spm import write_llama_tokenizer
    from sgeo.model.tiny import geometry, ref_dims

    sizes = ref_dims(layers)
    tokenizer = load_tokenizer(write_llama_tokenizer(workdir / "tokenizer", sizes.vocab_size))
    config = geometry(sizes)
    processor = SpatialGeoProcessor(build_image_processor(sizes.image_size), tokenizer, config.num_image_tokens,
                                    model_max_length=sizes.model_max_length, tokenization="llava")  # fmt: skip
    return config, processor


def build_towers(config, device):
    """Random-init fp32 towers on the device (the releases are fp32)."""
    import torch

    from sgeo.model.towers import VisionTowers

    torch.manual_seed(1)
    with torch.device(device):
        return VisionTowers(config, None, None)  # no path: built from the config, randomly initialised


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

    from sgeo.pipeline.synthetic import render_scene, sample_scene

    return [render_scene(sample_scene(np.random.default_rng([seed, i]), size, size)) for i in range(n)]


# -- 1. encode -------------------------------------------------------------------------------------
def check_encode(towers, pixels, device, args) -> dict:
    import torch

    def ours():
        return towers.encode_images(pixels)

    def bare():
        towers.clip.model(pixels, output_hidden_states=True)
        towers.moge.backbone.get_intermediate_layers(pixels, n=towers.moge.num_layers, norm=True)

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
    index = (torch.arange(batch) % features[0].shape[0]).to(pixels.device)  # the images, repeated to fill
    out["clip_features"], out["moge_features"] = features[0][index], features[1][index]
    out["pixel_values"] = pixels[index]
    return out


def engine_for(model, stage: int, batch: int, attn: str, device, workdir: Path):
    """sgeo's DeepSpeed engine for `stage`: its stage freezing, its config (ZeRO-2, bf16), one rank."""
    import deepspeed

    from sgeo.jobs.train.deepspeed_config import deepspeed_config
    from sgeo.jobs.train.recipe import TrainConfig, resolve
    from sgeo.jobs.train.setup import checkpoint_activations
    from sgeo.model import LoraSettings, configure_stage

    configure_stage(model, stage, LoraSettings() if stage == 2 else None)  # stage 2: LoRA r=128, alpha 256
    checkpoint_activations(model.language_model)  # as `sgeo train` does by default
    config = TrainConfig(stage=stage, data=workdir / "none.json", out=workdir / "out", store="none",
                         batch_size=batch, grad_accum=1, precision="bf16", attn=attn)  # fmt: skip
    resolved = resolve(config, world_size=1, device=device.type)
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=params,
                                      config=deepspeed_config(resolved, model.config))  # fmt: skip
    model.train()
    return engine


def train_step(engine, batch: dict, device, online: bool):
    if online:  # the towers run in the step, as `sgeo train --online`
        clip, moge = engine.module.encode_images(batch["pixel_values"]).values()
    else:
        clip, moge = batch["clip_features"].to(device), batch["moge_features"].to(device)
    out = engine(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                 labels=batch["labels"].to(device), clip_features=clip, moge_features=moge, use_cache=False)  # fmt: skip
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
        cached = engine(**common, clip_features=batch["clip_features"].to(device),
                        moge_features=batch["moge_features"].to(device)).loss  # fmt: skip
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


def check_train(
    config, processor, towers, features, pixels, device, args, workdir: Path
) -> tuple[list, dict]:
    import torch

    rows, losses = [], {}
    for attn in args.attn:
        for stage, batch_size in ((1, args.stage1_batch), (2, args.stage2_batch)):
            model = build_model(config, device, attn, torch.bfloat16)
            model.towers = copy.deepcopy(towers)  # fp32; DeepSpeed's bf16 mode casts the module's copy
            batch = training_batch(processor, stage, batch_size, features, pixels)
            engine = engine_for(model, stage, batch_size, attn, device, workdir)
            row = {
                "stage": stage,
                "attn": attn,
                "batch": batch_size,
                "sequence": int(batch["input_ids"].shape[1]),
            }
            row["cached"] = measure(engine, batch, device, args, online=False)
            row["online"] = measure(engine, batch, device, args, online=True)
            row["cached_over_online"] = row["cached"]["step_s"] / row["online"]["step_s"]
            if stage == 2 and not losses:
                losses = dict(
                    zip(("cached", "online"), same_batch_losses(engine, batch, device), strict=True)
                )
                losses["attn"] = attn
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
    index = (torch.arange(args.gen_batch) % features[0].shape[0]).to(features[0].device)
    common = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device),
              "clip_features": features[0][index].to(device), "moge_features": features[1][index].to(device),
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
        prompt_embeds = model.embed_inputs(prompt, clip_features=common["clip_features"],
                                           moge_features=common["moge_features"])  # [B, P, H]  # fmt: skip
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
    from sgeo.jobs.ask import ImageChat, _quantize_language_model

    reset_peak(device)
    model = build_model(config, device, args.attn[0], torch.float16, seed=4)
    _quantize_language_model(model, 4, str(device))  # what `sgeo ask --load-4bit` does after loading
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
    e, lines = result["encode"], []
    lines.append(f"device {result['device']} ({result['device_name']}), preset {result['preset']}, LLM layers "
                 f"{result['layers']}, torch {result['torch']}, {result['seconds']:.0f} s")  # fmt: skip
    lines.append(f"{'check':<34} result")
    lines.append("-" * 100)
    lines.append(f"{'encode, bf16 autocast, batch ' + str(e['batch']):<34} {e['images_per_s']:8.1f} images/s (both "
                 f"towers); bare towers {e['bare_images_per_s']:.1f} images/s; ratio {e['ratio']:.3f}")  # fmt: skip
    for row in result["train"]:
        c, o = row["cached"], row["online"]
        name = f"stage {row['stage']} {row['attn']}, batch {row['batch']} x {row['sequence']}"
        lines.append(f"{name:<34} cached {c['samples_per_s']:7.2f} samples/s ({c['step_s']:.3f} s/step, peak "
                     f"{gib(c['peak_memory'])}); online {o['samples_per_s']:7.2f} samples/s ({o['step_s']:.3f} s/step, "
                     f"peak {gib(o['peak_memory'])}); cached/online step {row['cached_over_online']:.2f}")  # fmt: skip
    loss = result["loss"]
    lines.append(f"{'loss, same batch, bf16':<34} cached {loss['cached']:.5f}, online {loss['online']:.5f}, "
                 f"|diff| {abs(loss['cached'] - loss['online']):.5f} (tol {result['loss_tol']}): "
                 f"{'ok' if result['checks']['loss_equal'] else 'FAIL'}")  # fmt: skip
    g = result["generate"]
    lines.append(f"{'generate, greedy, left-padded':<34} batch {g['batch']} x {g['prompt_tokens']} prompt tokens: "
                 f"{g['tokens_per_s']:.1f} tokens/s with the KV cache (peak {gib(g['peak_memory'])})")  # fmt: skip
    free_run = "same" if g["same_tokens_without_cache"] else f"first differs at {g['first_difference']}"
    lines.append(f"{'KV cache vs none':<34} {g['tokens_within_tol']} of {g['tokens_compared']} cached tokens are the "
                 f"cache-free argmax within {result['logit_tol']} (max margin {g['max_margin']:.4f}); free-running "
                 f"without the cache: {free_run}")  # fmt: skip
    q = result["4bit"]
    detail = q.get("skipped") or f"{q['tokens']} tokens in {q['seconds']:.2f} s, peak {gib(q['peak_memory'])}"
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
    result["encode"] = check_encode(towers, pixels, device, args)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
        clip, moge = towers.encode_images(pixels).values()  # what a bf16 store holds
    features = (clip.to(torch.bfloat16).clone(), moge.to(torch.bfloat16).clone())
    result["train"], result["loss"] = check_train(
        config, processor, towers, features, pixels, device, args, workdir
    )
    result["generate"] = check_generate(config, processor, features, device, args)
    result["4bit"] = check_4bit(config, processor, towers, images[0], device, args)
    result["checks"] = {
        "loss_equal": abs(result["loss"]["cached"] - result["loss"]["online"]) <= args.loss_tol,
        "kv_cache_tokens": result["generate"]["tokens_within_tol"] == result["generate"]["tokens_compared"],
        "no_ray": "ray" not in sys.modules,
    }
    result["seconds"] = time.perf_counter() - started
    print(table(result))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")
    deepspeed.comm.destroy_process_group()
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
