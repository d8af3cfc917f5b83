"""What decoding costs a CPU core at reference resolution: read + decode + CLIP preprocessing (336 px, pad and
crop) per image, for JPEGs of COCO's size and larger, on one thread. Prints ms/image and images/s per core,
and the cores one GPU needs to keep up at a given encoder rate. Asserts nothing.

    python bench/decode.py                       # 640x480 and 1280x960 JPEGs, 64 images each
    python bench/decode.py --gpu-rate 400        # cores per GPU for an encoder pace of 400 images/s
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photos(directory: Path, size: tuple[int, int], n: int, seed: int = 0) -> list[str]:
    """`n` photo-like JPEGs (smooth gradients plus noise, quality 90) of `size`."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    names = []
    for i in range(n):
        base = np.stack([(xx * 255 // w + 40 * i) % 256, yy * 255 // h, (xx + yy + 17 * i) % 256], -1)
        noisy = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
        name = f"{w}x{h}-{i:03d}.jpg"
        Image.fromarray(noisy).save(directory / name, "JPEG", quality=90)
        names.append(name)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument(
        "--gpu-rate", type=float, default=400.0, help="images/s one GPU encodes (for cores/GPU)"
    )
    args = parser.parse_args()

    import torch

    from sgeo.jobs.extract import read_image
    from sgeo.model import load_processor
    from sgeo.model.processing import build_image_processor

    torch.set_num_threads(1)  # one decode thread: the figure is per core
    print(f"1 thread; load average {'/'.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for size in ((640, 480), (1280, 960)):
            names = photos(root, size, args.n)
            for mode in ("pad", "crop"):
                processor = load_processor(
                    "tiny"
                )  # its tokenizer is not used; the image side is CLIP's at 336
                processor.image_processor, processor.image_aspect_ratio = build_image_processor(336), mode
                read_image(str(root), names[0], processor, (3, 336, 336))  # warm up
                start = time.perf_counter()
                for name in names:
                    record, _ = read_image(str(root), name, processor, (3, 336, 336))
                    assert record["status"] == "ok", record
                per_image = (time.perf_counter() - start) / len(names)
                print(f"{size[0]}x{size[1]} JPEG, {mode}: {1e3 * per_image:.1f} ms/image, {1 / per_image:.0f} images/s "
                      f"per core; {args.gpu_rate * per_image:.1f} cores per GPU at {args.gpu_rate:.0f} images/s")  # fmt: skip


if __name__ == "__main__":
    main()
