"""The synthetic spatial dataset: determinism, file formats, and answers that match the 3D ground truth."""

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sgeo.errors import SgeoError
from sgeo.synthetic import (
    BENCH_CATEGORIES,
    CHOICES,
    GENERATOR_VERSION,
    PREDICATES,
    QUANTITATIVE,
    Camera,
    Scene,
    SceneObject,
    bbox_2d,
    generate_synthetic,
    render_scene,
)

SIZE = (96, 72)
NAME = re.compile(r"the (\w+ (?:box|cylinder|sphere))")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("syn") / "a"
    summary = generate_synthetic(path, 8, seed=7, image_size=SIZE, n_eval=8)
    assert summary["images"] == 8 and summary["eval_images"] == 8 and Path(summary["bench_json"]).is_file()
    return path


def _load(out: Path, rel: str):
    return json.loads((out / rel).read_text())


def test_same_seed_gives_identical_bytes_and_other_seed_differs(out, tmp_path):
    generate_synthetic(tmp_path / "b", 8, seed=7, image_size=SIZE, n_eval=8)
    first, second = _hashes(out), _hashes(tmp_path / "b")
    assert len(first) == 8 + 8 + 5 and first == second  # images, eval images, 5 JSON files
    generate_synthetic(tmp_path / "c", 8, seed=8, image_size=SIZE, n_eval=8)
    third = _hashes(tmp_path / "c")
    assert third.keys() == first.keys()
    assert all(third[k] != first[k] for k in first if k.endswith(".png"))
    assert third["meta.json"] != first["meta.json"]


def test_eval_scenes_differ_from_training_scenes(out):
    train = {hashlib.sha256(p.read_bytes()).digest() for p in (out / "images").glob("*.png")}
    held_out = {hashlib.sha256(p.read_bytes()).digest() for p in (out / "eval" / "images").glob("*.png")}
    assert not train & held_out


def test_images_and_stage_files_have_the_llava_format(out):
    meta = _load(out, "meta.json")
    assert (meta["version"], meta["seed"], meta["n"], meta["n_eval"], meta["image_size"]) == (
        GENERATOR_VERSION,
        7,
        8,
        8,
        list(SIZE),
    )
    captions, qa = _load(out, "captions.json"), _load(out, "spatial_qa.json")
    assert (
        [c["image"] for c in captions]
        == [q["image"] for q in qa]
        == [f"images/{i:06d}.png" for i in range(8)]
    )
    for cap, q, truth in zip(captions, qa, meta["train"], strict=True):
        assert Image.open(out / cap["image"]).size == SIZE
        assert cap["conversations"][0] == {"from": "human", "value": "<image>\nDescribe the image briefly."}
        for obj in truth["objects"]:
            assert obj["name"] in cap["conversations"][1]["value"]
        conv = q["conversations"]
        assert len(conv) >= 8 and [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert conv[0]["value"].startswith("<image>\n")
        assert not any("<image>" in t["value"] for t in conv[1:])
        assert len({o["color"] for o in truth["objects"]}) == len(truth["objects"]) >= 2


def _objects(meta: dict, image: str) -> dict[str, dict]:
    (scene,) = [s for s in meta["eval"] if s["image"] == image]
    return {o["name"]: o for o in scene["objects"]}


def test_bench_format_and_balance(out):
    bench = _load(out, "eval/bench.json")
    assert len(bench) == 8 * 4
    yes_no: dict[str, list[str]] = {}
    for item in bench:
        category, kind = item["qa_info"]["category"], item["qa_info"]["type"]
        assert category in BENCH_CATEGORIES
        assert kind == ("quantitative" if category in QUANTITATIVE else "qualitative")
        assert (out / "eval" / item["file_path"]).is_file()
        human, gpt = item["conversations"]
        assert human == {"from": "human", "value": "<image>\n" + item["text_q"]} and gpt["from"] == "gpt"
        names = NAME.findall(item["text_q"])
        if category in PREDICATES or category in CHOICES:
            # the relation between the objects in the question's order, then the verdict
            said, verdict = gpt["value"].rsplit(", so ", 1)
            assert NAME.findall(said.lower()) == names, item
        if category in PREDICATES:
            answer = verdict.rstrip(".").capitalize()
            assert answer in ("Yes", "No")
            yes_no.setdefault(category, []).append(answer)
        if category in CHOICES:
            assert NAME.match(verdict).group(1) in names
    # Each predicate category alternates: no constant answer can beat chance on any category.
    assert sum(map(len, yes_no.values())) >= 6
    assert all(
        answers[::2] == ["Yes"] * len(answers[::2]) and "Yes" not in answers[1::2]
        for answers in yes_no.values()
    )
    counts = Counter(i["qa_info"]["category"] for i in bench)
    assert set(counts) == set(BENCH_CATEGORIES) and max(counts.values()) <= 2  # 32 items, 28 categories


def _truth(category: str, a: dict, b: dict | None) -> float:
    pa = np.array(a["position"])
    pb = np.array(b["position"]) if b else None
    return {
        "distance_data": lambda: float(np.linalg.norm(pa - pb)),
        "horizontal_distance_data": lambda: math.hypot(pa[0] - pb[0], pa[2] - pb[2]),
        "vertical_distance_data": lambda: abs(pa[1] - pb[1]),
        "height_data": lambda: a["size"]["height"],
        "width_data": lambda: a["size"]["width"],
    }[category]()


def test_quantitative_answers_match_meta_ground_truth(out):
    meta, bench = _load(out, "meta.json"), _load(out, "eval/bench.json")
    checked = set()
    for item in bench:
        category = item["qa_info"]["category"]
        if category not in QUANTITATIVE:
            continue
        objects = _objects(meta, item["file_path"])
        names = NAME.findall(item["text_q"])
        a, b = objects[names[0]], objects[names[1]] if len(names) > 1 else None
        answer = item["conversations"][1]["value"]
        if category == "direction":
            angle = math.degrees(
                math.atan2(b["position"][0] - a["position"][0], b["position"][2] - a["position"][2])
            )
            hour = int(re.search(r"(\d+) o'clock", answer).group(1))
            assert abs((angle - hour * 30 + 180) % 360 - 180) <= 15
        else:
            assert abs(float(NUMBER.search(answer).group()) - _truth(category, a, b)) <= 0.0051, (item, a, b)
        checked.add(category)
    assert checked == set(QUANTITATIVE)


def test_predicate_answers_match_meta_ground_truth(out):
    value = {
        "left": lambda o: -o["position"][0],
        "above": lambda o: o["position"][1],
        "behind": lambda o: o["distance_to_camera"],
        "tall": lambda o: o["size"]["height"],
        "wide": lambda o: o["size"]["width"],
        "big": lambda o: o["size"]["width"] * o["size"]["height"] * o["size"]["depth"],
    }
    relation = {"right": ("left", -1), "below": ("above", -1), "front": ("behind", -1), "short": ("tall", -1)}
    relation |= {"thin": ("wide", -1), "small": ("big", -1)} | {k: (k, 1) for k in value}
    meta, bench = _load(out, "meta.json"), _load(out, "eval/bench.json")
    n = 0
    for item in bench:
        category = item["qa_info"]["category"]
        if category not in PREDICATES:
            continue
        rel, sign = relation[category.removesuffix("_predicate")]
        objects = _objects(meta, item["file_path"])
        a, b = (objects[name] for name in NAME.findall(item["text_q"]))
        holds = sign * (value[rel](a) - value[rel](b)) > 0
        assert item["conversations"][1]["value"].endswith(", so yes." if holds else ", so no."), item
        n += 1
    assert n >= 6


def test_farther_points_project_higher_and_smaller():
    cam = Camera(224, 224, focal=190.0, elevation=1.5, pitch_deg=12.0)
    depths = np.linspace(2.0, 20.0, 10)
    feet = np.stack([np.full(10, 0.4), np.zeros(10), depths], axis=1)
    heads = feet + [0.0, 1.0, 0.0]
    (uv_feet, z_feet), (uv_heads, _) = cam.project(feet), cam.project(heads)
    assert np.all(np.diff(uv_feet[:, 1]) < 0)  # farther -> higher in the image (smaller v)
    assert np.all(uv_feet[:, 1] > cam.horizon_v())
    assert np.all(np.diff(uv_feet[:, 1] - uv_heads[:, 1]) < 0)  # a 1 m pole shrinks with distance
    assert np.all(np.diff(uv_feet[:, 0] - cam.width / 2) < 0)  # and drifts towards the centre
    assert np.all(np.diff(z_feet) > 0)


def test_rendered_object_lands_in_its_projected_box():
    cam = Camera(*SIZE, focal=80.0, elevation=1.5, pitch_deg=10.0)
    near = SceneObject("box", "red", -0.8, 3.0, 0.6, 0.8, 0.5)
    far = SceneObject("sphere", "blue", 1.0, 6.0, 0.6, 0.6, 0.6)
    img = np.asarray(render_scene(Scene(cam, (near, far), "gray", (0.0, 0.6, -0.8)))).astype(int)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    for mask, obj in (((r - g > 30) & (r - b > 30), near), ((b - r > 30) & (b - g > 30), far)):
        vs, us = np.nonzero(mask)
        u0, v0, u1, v1 = bbox_2d(cam, obj)
        assert abs(us.min() - u0) <= 1.5 and abs(us.max() + 1 - u1) <= 1.5
        assert abs(vs.min() - v0) <= 1.5 and abs(vs.max() + 1 - v1) <= 1.5
    # same-sized objects: the farther one is smaller and higher in the picture
    nb, fb = bbox_2d(cam, near), bbox_2d(cam, far)
    assert fb[3] < nb[3] and (fb[2] - fb[0]) < (nb[2] - nb[0])


def test_bad_arguments_and_non_empty_output_are_refused(out, tmp_path):
    with pytest.raises(SgeoError, match="not empty"):
        generate_synthetic(out, 2, seed=1, image_size=SIZE)
    with pytest.raises(SgeoError, match="--n must be"):
        generate_synthetic(tmp_path / "x", 0, seed=1)
    with pytest.raises(SgeoError, match="--image-size"):
        generate_synthetic(tmp_path / "x", 1, seed=1, image_size=(8, 8))
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "keep.txt").write_text("mine")
    generate_synthetic(tmp_path / "y", 2, seed=1, image_size=SIZE, n_eval=1, overwrite=True)
    assert (tmp_path / "y" / "keep.txt").read_text() == "mine"
    assert len(_load(tmp_path / "y", "captions.json")) == 2


def test_objects_per_scene_option_bounds_every_scene_and_is_recorded(out, tmp_path):
    generate_synthetic(tmp_path / "two", 6, seed=7, image_size=SIZE, n_eval=4, objects=(2, 2))
    meta = _load(tmp_path / "two", "meta.json")
    assert {len(r["objects"]) for r in meta["train"] + meta["eval"]} == {2}
    assert meta["objects_per_scene"] == [2, 2]
    # the default draws 2-4 and writes no such key, so default data is what earlier sgeo wrote
    default = _load(out, "meta.json")
    assert "objects_per_scene" not in default
    assert {len(r["objects"]) for r in default["train"] + default["eval"]} <= {2, 3, 4}
    for bad in ((1, 2), (3, 2), (2, 10), (2.0, 3), (2,)):
        with pytest.raises(SgeoError, match="objects must be"):
            generate_synthetic(tmp_path / "bad", 1, seed=1, image_size=SIZE, objects=bad)


def test_bench_answers_score_as_right_and_their_opposite_relation_as_wrong(out):
    """The scorer reads what the generator writes: each gt scores itself right, and the same answer with the
    stated relation flipped (the verdict left as it was) scores wrong, so the stated relation is what counts."""
    from sgeo.scoring import score_item
    from sgeo.synthetic.questions import STATEMENTS

    opposite = {a: b for pair in STATEMENTS.values() for a, b in (pair, pair[::-1])}
    checked = Counter()
    for item in _load(out, "eval/bench.json"):
        gt = item["conversations"][1]["value"]
        record = {"gt": gt, "question": item["text_q"], "qa_info": item["qa_info"]}
        assert score_item({**record, "pred": gt})["success"], item
        said = next((s for s in sorted(opposite, key=len, reverse=True) if f" {s} " in gt), None)
        if item["qa_info"]["category"] in PREDICATES + CHOICES:
            flipped = gt.replace(f" {said} ", f" {opposite[said]} ", 1)
            assert not score_item({**record, "pred": flipped})["success"], (item, flipped)
            checked[item["qa_info"]["category"] in PREDICATES] += 1
    assert checked[True] >= 6 and checked[False] >= 6


def test_ray_cast_geometry_agrees_with_the_rendered_image_and_the_scene():
    """The exact point map (what a geometry-trained MoGe is taught) sees each object where the renderer drew
    it, its points lie on that object's surface, and the floor's lie on the floor."""
    from sgeo.synthetic.geometry import point_map, ray_hits

    cam = Camera(*SIZE, focal=80.0, elevation=1.5, pitch_deg=10.0)
    box = SceneObject("box", "red", -0.8, 3.0, 0.6, 0.8, 0.5)
    ball = SceneObject("sphere", "blue", 1.0, 4.5, 0.7, 0.7, 0.7)
    can = SceneObject("cylinder", "green", 0.2, 6.0, 0.5, 1.2, 0.5)
    scene = Scene(cam, (box, ball, can), "gray", (0.0, 0.6, -0.8))
    img = np.asarray(render_scene(scene)).astype(int)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    drawn = {0: (r - g > 30) & (r - b > 30), 1: (b - r > 30) & (b - g > 30), 2: (g - r > 30) & (g - b > 30)}
    world, hit, which = ray_hits(scene, *SIZE)
    which = which.reshape(SIZE[1], SIZE[0])
    for k, obj in enumerate(scene.objects):
        cast = which == k
        iou = (cast & drawn[k]).sum() / (cast | drawn[k]).sum()
        assert iou > 0.9, (obj.name, iou)  # edges differ by the renderer's supersampling
        pts = world[cast.ravel()]
        lo = [obj.x - obj.width / 2, 0.0, obj.z - obj.depth / 2]
        hi = [obj.x + obj.width / 2, obj.height, obj.z + obj.depth / 2]
        assert np.all(pts >= np.array(lo) - 1e-6) and np.all(pts <= np.array(hi) + 1e-6)
    floor = hit & (which.ravel() == -1)
    assert floor.sum() > 0 and np.allclose(world[floor, 1], 0.0, atol=1e-9)
    assert not hit.all()  # the sky above the horizon sees nothing
    points, mask, _ = point_map(scene, *SIZE)  # OpenCV camera frame: depth grows away from the camera
    depth = points[..., 2][mask & (which == -1)]
    assert depth.min() > 0 and np.all(points[~mask] == 0)


def test_relations_option_narrows_training_and_both_benches_and_is_recorded(out, tmp_path):
    """A narrowed question set (the quickstart asks left/right alone): here only left/right and taller/shorter
    predicates and choices, in the training conversations and in both benches, with where every object is;
    other relations never asked."""
    from sgeo.synthetic.writer import NARROW_TURNS_PER_IMAGE

    generate_synthetic(tmp_path / "lt", 12, seed=7, image_size=SIZE, n_eval=6, relations=("left", "tall"))
    meta = _load(tmp_path / "lt", "meta.json")
    assert meta["relations"] == ["left", "tall"] and "relations" not in _load(out, "meta.json")
    asked = {"left_predicate", "right_predicate", "left_choice", "right_choice",
             "tall_predicate", "short_predicate", "tall_choice", "short_choice"}  # fmt: skip
    for bench in ("train_bench.json", "eval/bench.json"):
        categories = Counter(i["qa_info"]["category"] for i in _load(tmp_path / "lt", bench))
        assert set(categories) == asked, bench
    other = re.compile(r"above|below|behind|front|wide|thin|big|small|far|how|what|many|o'clock", re.I)
    for sample, record in zip(_load(tmp_path / "lt", "spatial_qa.json"), meta["train"], strict=True):
        questions = [t["value"].removeprefix("<image>\n") for t in sample["conversations"][::2]]
        where = sorted(q for q in questions if q.startswith("Where is the "))
        assert where == sorted(f"Where is the {o['name']}?" for o in record["objects"])  # every object, once
        assert 1 <= len(questions) - len(where) <= NARROW_TURNS_PER_IMAGE
        assert not any(other.search(q) for q in questions)
    with pytest.raises(SgeoError, match="relations must be"):
        generate_synthetic(tmp_path / "bad", 1, seed=1, image_size=SIZE, relations=("sideways",))


def test_sgeo_data_synthetic_refuses_in_one_line_naming_its_own_options(out, tmp_path):
    """Each refusal names the option the command takes (--overwrite, --n, --image-size, --n-eval), never a
    Python argument the user cannot pass."""
    from conftest import assert_one_line_error, run_sgeo_batch

    base = ["data", "synthetic", "--seed", "1"]
    results = run_sgeo_batch([
        [*base, "--out", out, "--n", "2", "--image-size", str(SIZE[0])],  # the fixture's folder: not empty
        [*base, "--out", tmp_path / "a", "--n", "0"],
        [*base, "--out", tmp_path / "b", "--n", "1", "--image-size", "8"],
        [*base, "--out", tmp_path / "c", "--n", "1", "--n-eval", "-1"],
    ])  # fmt: skip
    expected = [
        ("not empty", "--overwrite"),
        ("--n must be",),
        ("--image-size must be", "8 x 8"),
        ("--n-eval",),
    ]
    for result, fragments in zip(results, expected, strict=True):
        assert_one_line_error(result, *fragments)
        assert "overwrite=True" not in result["stderr"] and "n_eval" not in result["stderr"]


def test_every_human_turn_that_shows_the_image_has_image_turns_form(synthetic_root):
    """One home for LLaVA's "<image>\\n" + text: the synthetic captions and QA, `normalise_turns` and the chat
    turns of `sgeo ask` / `sgeo serve` (`question_turn`) all write what `image_turn` writes."""
    from sgeo.model.conversation import image_turn, images_in_front, normalise_turns, question_turn

    assert image_turn("q") == "<image>\nq" and image_turn("q", 2) == "<image>\n<image>\nq"
    assert question_turn("q", first=True) == {"from": "human", "value": image_turn("q")}
    assert question_turn("q", first=False) == {"from": "human", "value": "q"}
    assert images_in_front(image_turn("x", 3)) and not images_in_front("x <image>")
    assert normalise_turns([{"from": "human", "value": "two <image> <image>"}]) == [
        ("human", image_turn("two", 2))
    ]
    for name in ("captions.json", "spatial_qa.json"):
        for sample in json.loads((synthetic_root / name).read_text()):
            humans = [t["value"] for t in sample["conversations"] if t["from"] == "human"]
            assert humans[0] == image_turn(humans[0].removeprefix("<image>\n"))
            assert all("<image>" not in later for later in humans[1:])
