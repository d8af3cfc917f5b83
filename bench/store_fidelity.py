"""What a compact store encoding does to training: feature error, and stage-1 loss curves against bf16.

    PYTHONPATH=src python bench/store_fidelity.py                  # tiny preset, 64 images, 300 steps
    PYTHONPATH=src python bench/store_fidelity.py --ref-towers     # + random-init ViT-L-width towers

1. The synthetic dataset's images are encoded once by the tiny preset's towers (fp32, CPU) and written into
   one store per encoding (bf16, bf16-zstd, fp8) with extract's own `encode_shard` and `write_shard`.
2. Feature error of each store against the fp32 tower outputs and against the bf16 store: per token row,
   ||x' - x|| / ||x|| (max and mean over rows), and the largest element error relative to its row's
   largest magnitude.
3. Stage 1 (`run_train`, the real DeepSpeed recipe on CPU) from each store: same seed, same sample order,
   same steps; the loss curves are compared step by step (max and mean |difference|, and the relative
   difference of the final loss, averaged over the last 10 steps to see past batch noise).
4. Reference shapes (576 x 1024 and 4 x 576 x 1024), feature error only: no `ref-dims` preset exists, so
   (a) synthetic arrays with CLIP/DINOv2-like statistics (bench/store_read.py `realistic`: per-channel
   log-normal scales, outlier channels, high-norm tokens, heavy tails), and with --ref-towers (b) features of
   random-init towers of reference width (CLIP ViT-L/14-336 width, 1024, `--ref-layers` layers; MoGe with a
   DINOv2 ViT-L/14 backbone) written by sgeo.model.random_init (write_random_init). Both fp8 scalings are measured here:
   per token row (what the store does) and per channel (over the tokens of an image), to choose.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from sgeo.cache.layout import FP8_MAX  # noqa: E402
from sgeo.pipeline.features import decode, encode  # noqa: E402
from store_read import realistic  # noqa: E402

ENCODINGS = ("bf16", "bf16-zstd", "fp8")


def row_errors(x: torch.Tensor, y: torch.Tensor) -> dict:
    """Error of y against x [..., D]: relative L2 per token row (max, mean), max element error / row amax."""
    x, y = x.float(), y.float()
    rel = (y - x).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-30)
    elem = ((y - x).abs() / x.abs().amax(-1, keepdim=True).clamp_min(1e-30)).amax()
    return {
        "rel_l2_max": float(rel.max()),
        "rel_l2_mean": float(rel.mean()),
        "elem_over_row_amax": float(elem),
    }


def fp8_per_channel(x: torch.Tensor) -> torch.Tensor:
    """The alternative scaling: one scale per channel over an image's tokens (dim -2), decoded to float32."""
    amax = x.abs().amax(dim=-2, keepdim=True)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale


def errors_of(name: str, x: torch.Tensor) -> dict:
    """Error of the encoding `name` (or "fp8-channel") on features x, decoded to float32."""
    y = fp8_per_channel(x) if name == "fp8-channel" else decode(encode(x, name), name, torch.float32)
    return row_errors(x, y)


def fmt(e: dict) -> str:
    return (f"rel L2 per token max {100 * e['rel_l2_max']:6.3f}% mean {100 * e['rel_l2_mean']:6.3f}%, "
            f"max |err| / row amax {100 * e['elem_over_row_amax']:6.3f}%")  # fmt: skip


def build_stores(
    work: Path, root: Path, model_name: str, shard: int
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """One store per encoding from the same fp32 tower outputs; returns {encoding: url}, clip, moge (fp32)."""
    from sgeo.cache import FeatureStore
    from sgeo.jobs.extract import encode_shard
    from sgeo.model import load_model, resolve_model
    from sgeo.model.tower_fingerprint import towers_fingerprint
    from sgeo.pipeline.images import load_image
    from sgeo.pipeline.names import SYNTHETIC_CAPTIONS

    model, processor = load_model(model_name)
    ids = sorted({s["image"] for s in json.loads((root / SYNTHETIC_CAPTIONS).read_text())})
    pixels = processor.preprocess_images([load_image(root / i)[0] for i in ids])  # [N, 3, S, S]
    ok = np.ones(len(ids), bool)
    with torch.inference_mode():
        clip, moge = model.encode_images(pixels).values()
    urls = {}
    for name in ENCODINGS:
        url = str(work / f"{name}.zarr")
        fingerprint = towers_fingerprint(resolve_model(model_name), processor.preprocessing_spec(), name)
        store = FeatureStore.create(url, image_ids=ids, paths=[str(root / i) for i in ids], fingerprint=fingerprint,
                                    shapes=model.config.feature_shapes, dtype=name, shard_size=shard)  # fmt: skip
        for k in store.pending_shards():
            rows = store.shard_rows(k)
            words = encode_shard(model, pixels[rows.start : rows.stop], ok[rows.start : rows.stop], 16, name)
            store.write_shard(
                k, dict(zip(("clip", "moge"), words, strict=True)), [{"status": "ok"}] * len(rows)
            )
        store.finalize()
        urls[name] = url
    return urls, clip, moge


def train(args, root: Path, store: str, out: Path) -> list[float]:
    from sgeo.jobs.train import TrainConfig, run_train
    from sgeo.pipeline.names import SYNTHETIC_CAPTIONS

    shutil.rmtree(out, ignore_errors=True)
    run_train(TrainConfig(stage=1, data=root / SYNTHETIC_CAPTIONS, store=store, out=out, model=args.model,
                          batch_size=args.batch_size, grad_accum=1, max_steps=args.steps, save_every=10**9,
                          seed=args.seed, num_workers=1, lr=args.lr))  # fmt: skip
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def ref_towers(args, work: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of random-init towers of reference width on a few synthetic images (fp32, CPU)."""
    from sgeo.model import load_model
    from sgeo.model.random_init.sizes import RandomInitSizes
    from sgeo.model.random_init.writer import write_random_init
    from sgeo.pipeline.images import load_image

    sizes = RandomInitSizes(image_size=336, clip_hidden=1024, clip_intermediate=4096, clip_layers=args.ref_layers,
                            clip_heads=16, clip_projection=768, moge_backbone="dinov2_vitl14")  # fmt: skip
    model_dir = write_random_init(work / "ref-towers", sizes=sizes)
    model, processor = load_model(str(model_dir))
    images = sorted((Path(args.workdir or work) / "synthetic" / "images").glob("*.png"))[: args.ref_images]
    pixels = processor.preprocess_images([load_image(p)[0] for p in images])
    with torch.inference_mode():
        return model.encode_images(pixels)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--n", type=int, default=64, help="synthetic training images")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--ref-images", type=int, default=4, help="images for the reference-shape error")
    parser.add_argument("--ref-towers", action="store_true", help="also random-init ViT-L-width towers")
    parser.add_argument("--ref-layers", type=int, default=4, help="layers of the random-init CLIP-L tower")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args()

    from sgeo.pipeline.names import SYNTHETIC_CAPTIONS
    from sgeo.synthetic import generate_synthetic

    work = args.workdir or Path(tempfile.mkdtemp(prefix="sgeo-bench-fidelity-"))
    root = work / "synthetic"
    if not (root / SYNTHETIC_CAPTIONS).is_file():
        generate_synthetic(root, args.n, seed=0, n_eval=0)
    started = time.time()
    print(f"{args.model}: {args.n} images, stage 1, {args.steps} steps of batch {args.batch_size}, lr {args.lr}, "
          f"seed {args.seed}; {len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip

    urls, clip, moge = build_stores(work, root, args.model, args.shard_size)
    from sgeo.cache import FeatureStore, store_info

    stored = {}
    for name, url in urls.items():
        store = FeatureStore.open(url)
        c, m = store.read(list(range(store.num_rows))).values()
        stored[name] = (decode(c, name, torch.float32), decode(m, name, torch.float32))
        print(f"{name:9s} {store_info(url)['bytes_per_image'] / 1e3:8.1f} kB/image of arrays")
    print("feature error against the fp32 tower outputs (and against the bf16 store):")
    for name in ENCODINGS:
        for tower, truth, i in (("clip", clip, 0), ("moge", moge, 1)):
            print(f"  {name:9s} {tower}: vs fp32 {fmt(row_errors(truth, stored[name][i]))}")
            if name != "bf16":
                print(f"  {'':9s} {tower}: vs bf16 {fmt(row_errors(stored['bf16'][i], stored[name][i]))}")
    for tower, truth in (("clip", clip), ("moge", moge)):
        print(f"  fp8 scaled per channel instead, {tower}: vs fp32 {fmt(errors_of('fp8-channel', truth))}")

    curves = {name: train(args, root, url, work / f"out-{name}") for name, url in urls.items()}
    base = np.array(curves["bf16"])
    print(f"stage-1 loss over {args.steps} steps (same seed and order), against the bf16 store:")
    for name, curve in curves.items():
        c = np.array(curve)
        last, base_last = c[-10:].mean(), base[-10:].mean()
        print(f"  {name:9s} first {c[0]:.4f} final {c[-1]:.4f} (last-10 mean {last:.4f}); |diff| max "
              f"{np.abs(c - base).max():.5f} mean {np.abs(c - base).mean():.5f}; final loss "
              f"{100 * (c[-1] - base[-1]) / base[-1]:+.3f}% (last-10 mean {100 * (last - base_last) / base_last:+.3f}%)"
              f"{'  identical' if np.array_equal(c, base) else ''}")  # fmt: skip

    print("reference shapes, feature error only (decoded to float32):")
    rng = np.random.default_rng(0)
    synth = {"clip": torch.from_numpy(realistic(rng, args.ref_images, (576, 1024))),
             "moge": torch.from_numpy(realistic(rng, args.ref_images, (4, 576, 1024)))}  # fmt: skip
    sources = [("synthetic CLIP/DINOv2-like arrays", synth)]
    if args.ref_towers:
        c, m = ref_towers(args, work)
        sources.append(
            (
                f"random-init ViT-L-width towers ({args.ref_layers}-layer CLIP, MoGe ViT-L)",
                {"clip": c, "moge": m},
            )
        )
    for label, feats in sources:
        for tower, x in feats.items():
            for name in ("bf16", "fp8", "fp8-channel"):
                print(f"  {label}, {tower} {tuple(x.shape[1:])}, {name:11s}: {fmt(errors_of(name, x))}")
    print(f"({time.time() - started:.0f} s; load {os.getloadavg()[0]:.1f}; work dir {work})")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
