"""Give the tiny MoGe tower geometric signal, cheaply, and write a model that uses it. Prints figures; asserts
nothing.

    python bench/moge_geometry_probe.py --out runs/geo-moge        # 2000 scenes, 400 steps (2.5 min, 2 cores)
    python bench/relation_answer_probe.py --relation behind --branches moge --model runs/geo-moge/spatialgeo

The synthetic scenes know their geometry exactly (`sgeo.synthetic.geometry`, a ray-caster). This
trains the last K blocks of the `demo` preset's MoGe backbone (DINOv2 ViT-S/14; the blocks before them frozen
and run once) with a per-patch linear head on what each 14 px patch sees: its mean height above the floor, log
distance from the camera and x, and the share of it an object covers. Those blocks' outputs are what the MoGe
adapters read, so the model written to --out (the demo preset with this MoGe) hands the LLM geometry. On
held-out scenes it prints the head's error against the best constant for the object patches.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SAMPLES = 32  # rays per image side: 4 x 4 per patch of the 8 x 8 grid at 112 px
TARGETS = ("height above the floor (m)", "log distance from the camera", "x (m)")


def patch_targets(scene, patches: int) -> np.ndarray:
    """[patches * patches, 5]: per patch, the mean height, log distance and x of what its rays hit, the share
    of its rays that hit an object, and the share that hit anything (not the sky)."""
    from sgeo.synthetic.geometry import ray_hits

    world, hit, which = ray_hits(scene, SAMPLES, SAMPLES)
    distance = np.linalg.norm(world - scene.camera.position, axis=1)
    values = np.stack(
        [world[:, 1], np.log(np.clip(distance, 0.5, 30.0)), np.clip(world[:, 0], -6.0, 6.0)], axis=1
    )
    k = SAMPLES // patches

    def grid(a: np.ndarray) -> np.ndarray:  # [rays, C] -> [patches^2, rays per patch, C]
        return a.reshape(patches, k, patches, k, -1).transpose(0, 2, 1, 3, 4).reshape(patches**2, k * k, -1)

    v, h, o = grid(values * hit[:, None]), grid(hit[:, None].astype(float)), grid((which >= 0)[:, None] * 1.0)
    seen = h.sum(1)
    return np.concatenate([v.sum(1) / np.maximum(seen, 1), o.mean(1), h.mean(1)], axis=1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the model (a preset copy)")
    parser.add_argument("--n", type=int, default=2000, help="training scenes (the last 100 are held out)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--blocks", type=int, default=4, help="train the last K backbone blocks")
    args = parser.parse_args()

    from moge.model.v1 import MoGeModel

    from sgeo.model.processing import build_image_processor
    from sgeo.model.random_init.sizes import DEMO
    from sgeo.model.random_init.writer import write_random_init
    from sgeo.synthetic.render import render_scene
    from sgeo.synthetic.sampling import sample_scene

    torch.manual_seed(0)
    model_dir = write_random_init(args.out, sizes=DEMO)  # the demo preset's parts; its MoGe is replaced below
    moge_file = args.out / "moge" / "model.pt"
    checkpoint = torch.load(moge_file, weights_only=True)
    moge = MoGeModel(**checkpoint["model_config"])
    moge.load_state_dict(checkpoint["model"])
    backbone = moge.backbone
    patches = DEMO.image_size // backbone.patch_size
    processor = build_image_processor(DEMO.image_size)

    start = time.perf_counter()
    pixels, targets = [], []
    for i in range(args.n):  # scenes of their own stream: none is a quickstart image
        scene = sample_scene(np.random.default_rng([7, 9, i]), 224, 224)
        pixels.append(processor(render_scene(scene), return_tensors="pt")["pixel_values"][0])
        targets.append(torch.from_numpy(patch_targets(scene, patches)))
    pixels, targets = torch.stack(pixels), torch.stack(targets)
    frozen, trained = backbone.blocks[: -args.blocks], backbone.blocks[-args.blocks :]
    with torch.no_grad():  # the frozen blocks run once
        cached = []
        for i in range(0, args.n, 64):
            x = backbone.prepare_tokens_with_masks(pixels[i : i + 64])
            for block in frozen:
                x = block(x)
            cached.append(x)
        cached = torch.cat(cached)
    print(
        f"{args.n} scenes rendered, ray-cast and run through the frozen blocks: {time.perf_counter() - start:.0f} s"
    )

    head = torch.nn.Linear(backbone.embed_dim, 4)  # height, log distance, x, object logit
    params = [*trained.parameters(), *backbone.norm.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1
    )
    weights = torch.tensor([2.0, 2.0, 0.5])
    held_out = torch.arange(args.n - 100, args.n)

    def predict(idx: torch.Tensor) -> torch.Tensor:
        x = cached[idx]
        for block in trained:
            x = block(x)
        return head(backbone.norm(x)[:, 1:])  # [B, patches^2, 4]; CLS dropped as the tower drops it

    start = time.perf_counter()
    for _ in range(args.steps):
        idx = torch.randint(0, args.n - 100, (args.batch,))
        out, target = predict(idx), targets[idx]
        seen = target[..., 4:5]
        regression = ((out[..., :3] - target[..., :3]).abs() * weights * seen).sum() / seen.sum().clamp(min=1)
        loss = regression + F.binary_cross_entropy_with_logits(out[..., 3], target[..., 3])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    print(f"{args.steps} steps of {args.batch}: {time.perf_counter() - start:.0f} s")

    with torch.no_grad():
        out, target = predict(held_out), targets[held_out]
    on_object = target[..., 3] > 0.5
    print(f"held-out object patches ({int(on_object.sum())} in 100 scenes), mean absolute error:")
    for k, name in enumerate(TARGETS):
        truth = target[..., k][on_object]
        err = (out[..., k][on_object] - truth).abs().mean()
        print(f"  {name:30s} {err:.3f}   (best constant: {(truth - truth.median()).abs().mean():.3f})")
    accuracy = ((out[..., 3] > 0) == on_object).float().mean()
    print(f"  object or not, per patch      {100 * accuracy:.1f} %")

    state = dict(checkpoint["model"])
    state.update({k: v.detach().clone() for k, v in moge.state_dict().items() if k.startswith("backbone.")})
    torch.save({**checkpoint, "model": state}, moge_file)
    print(f"wrote {model_dir} (the demo preset with this MoGe at {moge_file})")


if __name__ == "__main__":
    main()
