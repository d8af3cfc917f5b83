"""Writing the synthetic dataset to a folder: images, captions, spatial QA, the benchmark and metadata.

Layout of `out`: images/NNNNNN.png, captions.json (stage 1), spatial_qa.json (stage 2, LLaVA
conversations), train_bench.json (benchmark questions about the training images: what a baseline may be
fitted on), eval/images/NNNNNN.png with eval/bench.json (the benchmark, on held-out images), and meta.json
(generator, arguments, camera and per-object 3D ground truth of every image).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from sgeo.errors import SgeoError
from sgeo.model.conversation import question_turn
from sgeo.pipeline.datasets import CAPTION_PROMPT  # one caption prompt for every stage-1 dataset
from sgeo.pipeline.names import SYNTHETIC_BENCH as BENCH
from sgeo.pipeline.names import SYNTHETIC_CAPTIONS as CAPTIONS
from sgeo.pipeline.names import SYNTHETIC_EVAL as EVAL
from sgeo.pipeline.names import SYNTHETIC_META as META
from sgeo.pipeline.names import SYNTHETIC_QA as QA
from sgeo.pipeline.names import SYNTHETIC_TRAIN_BENCH as TRAIN_BENCH

from .questions import (
    BENCH_CATEGORIES,
    TRAIN_CATEGORIES,
    caption,
    category_type,
    locate,
    make_question,
    relation_categories,
)
from .relations import RELATIONS
from .render import render_scene
from .sampling import OBJECTS_PER_SCENE, sample_scene
from .scene import COLOURS, Scene, bbox_2d, camera_distance

# 2: yes/no alternates per category; 3: train_bench.json, nearer and larger objects, locate turns;
# 4: two-object answers state the relation, then the verdict; 8 turns per image; terse locate turns
GENERATOR_VERSION = 4
BENCH_ITEMS_PER_IMAGE = 4


def _scene_rng(seed: int, split: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, split, index])


def _scene_meta(image: str, scene: Scene) -> dict:
    objects = []
    for o in scene.objects:
        objects.append(
            {
                "name": o.name,
                "shape": o.shape,
                "color": o.color,
                "rgb": list(COLOURS[o.color]),
                "position": [round(float(c), 4) for c in o.centre],
                "size": {"width": o.width, "height": o.height, "depth": o.depth},
                "distance_to_camera": round(camera_distance(scene.camera, o), 4),
                "bbox": [round(c, 1) for c in bbox_2d(scene.camera, o)],
            }
        )
    return {
        "image": image,
        "camera": scene.camera.to_json(),
        "floor": scene.floor,
        "light": list(scene.light),
        "objects": objects,
    }


def conversation(turns: list[tuple[str, str]]) -> list[dict]:
    """LLaVA's `conversations` of (question, answer) turns, the image token before the first question."""
    conv = []
    for i, (q, a) in enumerate(turns):
        conv.append(question_turn(q, first=i == 0))
        conv.append({"from": "gpt", "value": a})
    return conv


TURNS_PER_IMAGE = 8  # questions of distinct categories per training image, then one "where" turn
# with a narrowed question set: two, as bench/relation_answer_probe.py trains (the quickstart's left/right
# learned with two; with four, loss fell slower per step and each step cost more): turns on one pair repeat
# its relation, so a later turn can copy the earlier one's statement instead of reading the image
NARROW_TURNS_PER_IMAGE = 2


def _qa_turns(
    scene: Scene, rng: np.random.Generator, categories: tuple[str, ...] | None = None
) -> list[tuple[str, str]]:
    """A training conversation: questions of `TURNS_PER_IMAGE` distinct categories and where one object is,
    in random order. Many turns per image: the image's tokens are most of what a step costs.

    With `categories` (a narrowed question set), its questions and where *every* object is: the "where"
    turns ground each colour name in a place, which the relations build on, and cost few tokens."""
    turns = []
    wanted = TURNS_PER_IMAGE if categories is None else NARROW_TURNS_PER_IMAGE
    for category in rng.permutation(list(categories or TRAIN_CATEGORIES)):
        qa = make_question(str(category), scene, rng, want_yes=bool(rng.random() < 0.5))
        if qa is not None:
            turns.append(qa)
        if len(turns) == wanted:
            break
    if categories is None:
        turns.append(locate(scene, scene.objects[int(rng.integers(len(scene.objects)))]))
    else:
        turns.extend(locate(scene, o) for o in scene.objects)
    return [turns[int(k)] for k in rng.permutation(len(turns))]


# random streams: one per (split, image)
_TRAIN, _EVAL, _EVAL_QUESTIONS, _TRAIN_QUESTIONS = 0, 1, 2, 3


def _bench_items(
    scenes: list[Scene], seed: int, stream: int, categories: tuple[str, ...] = BENCH_CATEGORIES
) -> list[dict]:
    """Each item asks the least-used of `categories` that the scene can answer, so categories stay balanced;
    each predicate category alternates between yes and no, so no constant answer beats chance."""
    items: list[dict] = []
    used = dict.fromkeys(categories, 0)
    for i, scene in enumerate(scenes):
        rng = _scene_rng(seed, stream, i)
        asked: set[str] = set()
        for _ in range(BENCH_ITEMS_PER_IMAGE):
            for category in sorted(categories, key=lambda c: used[c]):  # stable: ties keep the listed order
                if category in asked:
                    continue
                qa = make_question(category, scene, rng, want_yes=used[category] % 2 == 0)
                if qa is not None:
                    break
            else:
                break
            asked.add(category)
            used[category] += 1
            question, answer = qa
            items.append(
                {
                    "id": str(len(items)),
                    "file_path": f"images/{i:06d}.png",
                    "text_q": question,
                    "qa_info": {"category": category, "type": category_type(category)},
                    "conversations": conversation([(question, answer)]),
                }
            )
    return items


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


_OUTPUTS = ("images", EVAL, CAPTIONS, QA, TRAIN_BENCH, META)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SgeoError(f"output path {out} exists and is not a folder; choose a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SgeoError(
                f"output folder {out} is not empty; choose a new folder, or replace what the generator wrote "
                "there with --overwrite"
            )
        for name in _OUTPUTS:  # only what we write, never anything else in the folder
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / EVAL / "images").mkdir(parents=True, exist_ok=True)


def generate_synthetic(
    out: str | Path,
    n: int,
    seed: int,
    *,
    image_size: tuple[int, int] = (224, 224),
    n_eval: int | None = None,
    overwrite: bool = False,
    objects: tuple[int, int] = OBJECTS_PER_SCENE,
    relations: tuple[str, ...] | None = None,
) -> dict:
    """Write the synthetic spatial dataset to `out` (layout in the module docs); returns paths and counts.

    Deterministic: the same arguments give byte-identical files. Training and eval scenes come from
    disjoint random streams. `objects` is the (fewest, most) objects per scene, 2 to 9 (one colour each).
    `relations` (e.g. ("left", "tall")) narrows every question, in training and in both benchmarks, to the
    predicates and choices of those relations, with a "where" turn per object: a question set that a small
    training budget teaches (the quickstart's); None asks every category.
    """
    if not isinstance(n, int) or n < 1:
        raise SgeoError(f"--n must be a positive number of images, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise SgeoError(f"--seed must be a non-negative integer, got {seed!r}")
    width, height = image_size
    if not (32 <= width <= 4096 and 32 <= height <= 4096):
        raise SgeoError(f"--image-size must be between 32 and 4096 pixels per side, got {width} x {height}")
    n_eval = max(20, n // 5) if n_eval is None else n_eval
    if n_eval < 0:
        raise SgeoError(f"--n-eval must be >= 0, got {n_eval}")
    if not (
        len(objects) == 2
        and all(isinstance(k, int) for k in objects)
        and 2 <= objects[0] <= objects[1] <= len(COLOURS)
    ):
        raise SgeoError(
            f"objects must be (fewest, most) with 2 <= fewest <= most <= {len(COLOURS)}, got {objects!r}"
        )
    if relations is not None and (
        not relations or any(r not in RELATIONS for r in relations) or len(set(relations)) != len(relations)
    ):
        raise SgeoError(f"relations must be distinct names among {', '.join(RELATIONS)}, got {relations!r}")
    train_categories = None if relations is None else relation_categories(tuple(relations))
    # every relation has bench predicates, so a narrowed bench is never empty
    bench_categories = tuple(c for c in BENCH_CATEGORIES if train_categories is None or c in train_categories)
    out = Path(out)
    _prepare_out(out, overwrite)

    captions, qa, train_scenes, train_meta = [], [], [], []
    for i in range(n):
        rng = _scene_rng(seed, _TRAIN, i)
        scene = sample_scene(rng, width, height, objects)
        train_scenes.append(scene)
        image = f"images/{i:06d}.png"
        render_scene(scene).save(out / image, format="PNG")
        sample_id = f"{i:06d}"
        captions.append(
            {
                "id": sample_id,
                "image": image,
                "conversations": conversation([(CAPTION_PROMPT, caption(scene, rng))]),
            }
        )
        qa.append(
            {
                "id": sample_id,
                "image": image,
                "conversations": conversation(_qa_turns(scene, rng, train_categories)),
            }
        )
        train_meta.append(_scene_meta(image, scene))

    eval_scenes, eval_meta = [], []
    for i in range(n_eval):
        scene = sample_scene(_scene_rng(seed, _EVAL, i), width, height, objects)
        image = f"images/{i:06d}.png"
        render_scene(scene).save(out / EVAL / image, format="PNG")
        eval_scenes.append(scene)
        eval_meta.append(_scene_meta(image, scene))
    bench = _bench_items(eval_scenes, seed, _EVAL_QUESTIONS, bench_categories)

    _write_json(out / CAPTIONS, captions)
    _write_json(out / QA, qa)
    _write_json(out / TRAIN_BENCH, _bench_items(train_scenes, seed, _TRAIN_QUESTIONS, bench_categories))
    _write_json(out / EVAL / BENCH, bench)
    _write_json(
        out / META,
        {
            "generator": "sgeo.synthetic",
            "version": GENERATOR_VERSION,
            "seed": seed,
            "n": n,
            "n_eval": n_eval,
            "image_size": [width, height],
            # only when not the default, so that data of the default sizes keeps the meta.json it always had
            **({} if tuple(objects) == OBJECTS_PER_SCENE else {"objects_per_scene": list(objects)}),
            **({} if relations is None else {"relations": list(relations)}),
            "coordinates": "metres; x right, y up, z forward from the ground point below the camera; "
            "position is the object centre",
            "train": train_meta,
            "eval": eval_meta,
        },
    )
    return {
        "out": str(out),
        "images": n,
        "eval_images": n_eval,
        "captions_json": str(out / CAPTIONS),
        "spatial_qa_json": str(out / QA),
        "bench_json": str(out / EVAL / BENCH),
        "train_bench_json": str(out / TRAIN_BENCH),
        "meta_json": str(out / META),
        "qa_turns": sum(len(s["conversations"]) // 2 for s in qa),
        "bench_items": len(bench),
    }
