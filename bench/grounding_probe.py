"""Can anything read *where* a named object is from the tiny preset's tower features? Prints figures; asserts
nothing.

    python bench/grounding_probe.py                 # 2000 + 100 synthetic images, both settings (~3 min, 2 cores)
    python bench/grounding_probe.py --n 500 --steps 800

For each setting of `RandomInitSizes.position_embedding_scale` (0: the libraries' std-0.02 init, as the tiny
preset has; --scale: a 2D sin-cos of that amplitude), the towers of a preset written with it encode the same synthetic images, and a
one-layer attention probe is trained on the training images: a learned query per colour attends over one
tower's patch tokens (LayerNorm, linear keys and values, no position embedding of its own) and a linear head
says which third of the image (left, middle, right) the object of that colour is in. It is scored on the
held-out images against the training split's most common third. The probe can find the object by its
colour either way; it can say where it is only if the features carry the patch's position.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

THIRDS = ("left", "middle", "right")


def encode(model_dir: Path, data: Path, records: list[dict], folder: Path, batch: int = 64):
    """(clip [N, T, Dc], the last MoGe layer [N, T, Dm]) of the records' images."""
    from sgeo.model.loading import load_encoders, load_processor
    from sgeo.pipeline.images import load_image

    processor, towers = load_processor(str(model_dir)), load_encoders(str(model_dir))
    clip, moge = [], []
    for i in range(0, len(records), batch):
        images = [load_image(folder / r["image"])[0] for r in records[i : i + batch]]
        c, m = towers.encode_images(processor.preprocess_images(images))
        clip.append(c.float())
        moge.append(m[:, -1].float())
    return torch.cat(clip), torch.cat(moge)


def targets(records: list[dict], colours: list[str]):
    """(image index, colour index, third) of every object."""
    rows = []
    for i, r in enumerate(records):
        for o in r["objects"]:
            u0, _, u1, _ = o["bbox"]
            rows.append((i, colours.index(o["color"]), min(2, int(3 * (u0 + u1) / 2 / r["camera"]["width"]))))
    return torch.tensor(rows).T  # [3, objects]


class AttentionProbe(torch.nn.Module):
    def __init__(self, feature_dim: int, colours: int, width: int = 64):
        super().__init__()
        self.keys = torch.nn.Sequential(torch.nn.LayerNorm(feature_dim), torch.nn.Linear(feature_dim, width))
        self.values = torch.nn.Sequential(
            torch.nn.LayerNorm(feature_dim), torch.nn.Linear(feature_dim, width)
        )
        self.queries = torch.nn.Embedding(colours, width)
        self.head = torch.nn.Linear(width, len(THIRDS))

    def forward(self, tokens: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("btd,bd->bt", self.keys(tokens), self.queries(colour)) / 8.0
        pooled = torch.einsum("bt,btd->bd", scores.softmax(-1), self.values(tokens))
        return self.head(pooled)


def probe(train_feats, train_t, eval_feats, eval_t, steps: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    model = AttentionProbe(train_feats.shape[-1], int(max(train_t[1].max(), eval_t[1].max())) + 1)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(steps):
        idx = torch.randint(train_t.shape[1], (64,))
        logits = model(train_feats[train_t[0, idx]], train_t[1, idx])
        loss = torch.nn.functional.cross_entropy(logits, train_t[2, idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (model(eval_feats[eval_t[0]], eval_t[1]).argmax(-1) == eval_t[2]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="training images")
    parser.add_argument("--n-eval", type=int, default=100, help="held-out images")
    parser.add_argument("--steps", type=int, default=1500, help="probe steps (batch 64)")
    parser.add_argument("--scale", type=float, default=1.0, help="sin-cos amplitude to compare with 0")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    import json

    from sgeo.model.tiny import TINY, write_tiny
    from sgeo.pipeline.synthetic import generate_synthetic
    from sgeo.pipeline.synthetic.scene import COLOURS

    work = args.workdir or Path(tempfile.mkdtemp(prefix="sgeo-grounding-"))
    data = work / "data"
    generate_synthetic(data, args.n, 0, n_eval=args.n_eval, overwrite=True)
    meta = json.loads((data / "meta.json").read_text())
    colours = list(COLOURS)
    train_t, eval_t = targets(meta["train"], colours), targets(meta["eval"], colours)
    train_third = np.bincount(train_t[2].numpy(), minlength=3)
    majority = (eval_t[2] == int(train_third.argmax())).float().mean().item()
    print(f"{args.n} training / {args.n_eval} held-out images, {eval_t.shape[1]} held-out objects; the "
          f"training split's most common third ({THIRDS[int(train_third.argmax())]}) scores {majority:.3f}")  # fmt: skip
    print(f"{'position embeddings':<32} {'tower':<6} held-out accuracy   (probe: {args.steps} steps)")
    for scale, label in ((0.0, "library init (std 0.02)"), (args.scale, f"2D sin-cos x {args.scale:g}")):
        model_dir = write_tiny(work / f"preset-{scale}", sizes=replace(TINY, position_embedding_scale=scale))
        start = time.perf_counter()
        train = encode(model_dir, data, meta["train"], data)
        held_out = encode(model_dir, data, meta["eval"], data / "eval")
        seconds = time.perf_counter() - start
        for tower, k in (("CLIP", 0), ("MoGe", 1)):
            accuracy = probe(train[k], train_t, held_out[k], eval_t, args.steps)
            print(f"{label:<32} {tower:<6} {accuracy:.3f}   (encode {seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
