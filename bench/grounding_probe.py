"""Can anything read *where* a named object is from the tiny preset's tower features? Prints figures; asserts
nothing.

    python bench/grounding_probe.py                 # 2000 + 100 synthetic images (~3.6 min, 2 cores)
    python bench/grounding_probe.py --n 500 --steps 800

For each setting of `RandomInitSizes.position_embedding_scale` (0: the libraries' std-0.02 init, as the tiny
preset has; --scale: a 2D sin-cos of that amplitude), the towers of a preset written with it encode the same
synthetic images, and a one-layer attention probe is trained on the training images: a learned query per
colour attends over one tower's patch tokens (LayerNorm, linear keys and values, no position embedding of
its own) and a linear head says which third of the image (left, middle, right) the object of that colour is
in. It is scored on the held-out images against the training split's most common third. The probe can find
the object by its colour either way; it can say where it is only if the features carry the patch's position.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

THIRDS = ("left", "middle", "right")


def encode(model_dir: Path, records: list[dict], folder: Path, batch: int = 64):
    """(clip [N, T, Dc], moge [N, L, T, Dm]) of the records' images, in bfloat16 as a store holds them."""
    from sgeo.model.loading import load_encoders, load_processor
    from sgeo.pipeline.images import load_image

    processor, towers = load_processor(str(model_dir)), load_encoders(str(model_dir))
    clip, moge = [], []
    for i in range(0, len(records), batch):
        images = [load_image(folder / r["image"])[0] for r in records[i : i + batch]]
        c, m = towers.encode_images(processor.preprocess_images(images)).values()
        clip.append(c.bfloat16())
        moge.append(m.bfloat16())
    return torch.cat(clip), torch.cat(moge)


def targets(records: list[dict], colours: list[str]):
    """(image index, colour index, third) of every object."""
    from sgeo.synthetic.questions import image_third

    rows = []
    for i, r in enumerate(records):
        for o in r["objects"]:
            u0, _, u1, _ = o["bbox"]
            rows.append((i, colours.index(o["color"]), image_third(u0, u1, r["camera"]["width"])))
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


class ThroughTheModel(torch.nn.Module):
    """[adapters(features), embedding(colour word)] -> the LLM -> a linear head on the last position."""

    def __init__(self, model, colour_ids: torch.Tensor):
        super().__init__()
        self.model, self.colour_ids = model, colour_ids
        self.head = torch.nn.Linear(model.config.text_config.hidden_size, len(THIRDS))

    def forward(self, features: tuple[torch.Tensor, torch.Tensor], colour: torch.Tensor) -> torch.Tensor:
        visual = self.model.get_image_features(features[0].float(), features[1].float())  # [B, 2T, H]
        word = self.model.get_input_embeddings()(self.colour_ids[colour])[:, None]  # [B, 1, H]
        hidden = self.model.language_model.model(inputs_embeds=torch.cat([visual, word], 1)).last_hidden_state
        return self.head(hidden[:, -1])


def tower_tokens(features: dict, k: int, split: str, images: torch.Tensor) -> torch.Tensor:
    """One tower's tokens of some images (MoGe: its last block), in float32."""
    tokens = features[split][k][images]
    return (tokens if k == 0 else tokens[:, -1]).float()


def both_towers(features: dict, split: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return features[split][0][images], features[split][1][images]


def fit(model, pick, train_t, eval_t, steps: int, lr: float, seed: int = 0) -> float:
    """Train `model(pick(image indices), colours)` to say the third; held-out accuracy."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    for _ in range(steps):
        idx = torch.randint(train_t.shape[1], (64,))
        loss = torch.nn.functional.cross_entropy(
            model(pick("train", train_t[0, idx]), train_t[1, idx]), train_t[2, idx]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (model(pick("eval", eval_t[0]), eval_t[1]).argmax(-1) == eval_t[2]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="training images")
    parser.add_argument("--n-eval", type=int, default=100, help="held-out images")
    parser.add_argument("--steps", type=int, default=1500, help="probe steps (batch 64)")
    parser.add_argument("--scale", type=float, default=1.0, help="sin-cos amplitude to compare with 0")
    parser.add_argument("--llm-init", type=float, default=0.125, help="LLM init std to compare with 0.02")
    parser.add_argument("--llm-steps", type=int, default=400, help="steps through the model (batch 64)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from sgeo.model.random_init.sizes import TINY
    from sgeo.model.random_init.writer import write_random_init
    from sgeo.pipeline.names import SYNTHETIC_META
    from sgeo.synthetic import generate_synthetic
    from sgeo.synthetic.scene import COLOURS

    work = args.workdir or Path(tempfile.mkdtemp(prefix="sgeo-grounding-"))
    data = work / "data"
    generate_synthetic(data, args.n, 0, n_eval=args.n_eval, overwrite=True)
    meta = json.loads((data / SYNTHETIC_META).read_text())
    colours = list(COLOURS)
    train_t, eval_t = targets(meta["train"], colours), targets(meta["eval"], colours)
    train_third = np.bincount(train_t[2].numpy(), minlength=3)
    majority = (eval_t[2] == int(train_third.argmax())).float().mean().item()
    print(f"{args.n} training / {args.n_eval} held-out images, {eval_t.shape[1]} held-out objects; the "
          f"training split's most common third ({THIRDS[int(train_third.argmax())]}) scores {majority:.3f}")  # fmt: skip
    print(f"{'position embeddings':<32} {'tower':<6} held-out accuracy   (probe: {args.steps} steps)")
    for scale, label in ((0.0, "library init (std 0.02)"), (args.scale, f"2D sin-cos x {args.scale:g}")):
        model_dir = write_random_init(
            work / f"preset-{scale}", sizes=replace(TINY, position_embedding_scale=scale)
        )
        start = time.perf_counter()
        features = {"train": encode(model_dir, meta["train"], data), "eval": encode(model_dir, meta["eval"], data / "eval")}  # fmt: skip
        seconds = time.perf_counter() - start
        for tower, k in (("CLIP", 0), ("MoGe", 1)):
            probe = AttentionProbe(features["train"][k].shape[-1], len(colours))
            accuracy = fit(probe, partial(tower_tokens, features, k), train_t, eval_t, args.steps, lr=3e-3)
            print(f"{label:<32} {tower:<6} {accuracy:.3f}   (encode {seconds:.0f} s)", flush=True)

    sin_cos_features = features  # the loop's last: the towers of --scale, which the LLM runs below read
    from sgeo.model.loading import load_model

    print(f"\nthrough the model's adapters and LLM (sin-cos x {args.scale:g} features, {args.llm_steps} steps, "
          "lr 1e-3)")  # fmt: skip
    for init in (0.02, args.llm_init):
        sizes = replace(TINY, position_embedding_scale=args.scale, llm_init_std=init)
        model, processor = load_model(str(write_random_init(work / f"preset-{args.scale}-init-{init}", sizes=sizes)),
                                      load_towers=False)  # fmt: skip
        words = [processor.tokenizer(" " + c, add_special_tokens=False)["input_ids"][-1] for c in colours]
        start = time.perf_counter()
        probe = ThroughTheModel(model.float().train(), torch.tensor(words))
        accuracy = fit(
            probe, partial(both_towers, sin_cos_features), train_t, eval_t, args.llm_steps, lr=1e-3
        )
        print(f"LLM and adapters init std {init:<6g} held-out accuracy {accuracy:.3f}   "
              f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
