"""Towers as data: a model of three towers (CLIP, MoGe and Depth Anything) composed, extracted into a store per
tower, trained in both stages from those stores; its online loss (pixels through all three towers) equals its
cached loss; swapping one tower extracts that tower only; a missing or mismatched tower store is refused."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import assert_one_line_error, open_extracted, run_sgeo_batch
from llm_layouts import write_qwen25
from tower_layouts import write_depth_anything, write_dinov2

STORE_ARGS = ["--num-cpus", "2", "--shard-size", "8", "--batch-size", "8", "--dtype", "fp32"]


@pytest.fixture(scope="module")
def parts(tiny_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("parts")
    return {
        "llm": write_qwen25(root / "qwen"),
        "clip": tiny_dir.parent / "clip",
        "moge": tiny_dir.parent / "moge" / "model.pt",
        "depth_anything": write_depth_anything(root / "depth-anything"),
        "dinov2": write_dinov2(root / "dinov2"),
    }


def _compose(parts: dict, out, *kinds: str) -> list:
    towers = [arg for kind in kinds for arg in ("--tower", f"{kind}={parts[kind]}")]
    return ["compose", "--llm", parts["llm"], *towers, "--out", out]


def _files(directory) -> dict:
    """Every file of a directory with its bytes and modification time: what a writer would change."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_three_towers_compose_extract_train_and_swap_one(parts, synthetic_root, tmp_path):
    stores, three, two = tmp_path / "stores", tmp_path / "three", tmp_path / "two"
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    captions, qa = synthetic_root / "captions.json", synthetic_root / "spatial_qa.json"
    extract = ["extract", "--root", synthetic_root, "--store", stores, *STORE_ARGS]
    train = [
        "--store",
        stores,
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--num-workers",
        "0",
    ]
    results = run_sgeo_batch([
        _compose(parts, three, "clip", "moge", "depth_anything"),
        [*extract, "--model", three],
        ["train", "--stage", "1", "--data", captions, "--model", three, "--out", stage1, *train],
        ["train", "--stage", "2", "--data", qa, "--model", stage1, "--out", stage2, "--lora-r", "4",
         "--lora-alpha", "8", *train],
    ])  # fmt: skip
    for result in results:
        assert result["code"] == 0, (result["args"], result["stderr"][-3000:])
    config = json.loads((three / "config.json").read_text())
    assert [t["name"] for t in config["vision_towers"]] == ["clip", "moge", "depth_anything"]
    assert config["fusion"] == "interleave"  # three grids of 8 x 8
    assert sorted(p.name for p in stores.iterdir()) == ["clip", "depth_anything", "moge"]
    assert "stores: clip (encoded), moge (encoded), depth_anything (encoded)" in results[1]["stdout"]
    trainable = json.loads((stage1 / "trainable.json").read_text())
    assert {name.split(".")[0] for name in trainable["trainable"]} == {
        "clip_adapter",
        "moge_adapter",
        "depth_anything_adapter",
    }  # fmt: skip  (a composed model: stage 1 trains every adapter)
    before = {name: _files(stores / name) for name in ("clip", "moge", "depth_anything")}

    # the same CLIP, MoGe swapped for DINOv2: only the DINOv2 store is written, the CLIP store opened as it is
    results = run_sgeo_batch([
        _compose(parts, two, "clip", "dinov2"),
        [*extract, "--model", two],
        ["train", "--stage", "1", "--data", captions, "--model", two, "--out", tmp_path / "two1", *train],
        ["train", "--stage", "1", "--data", captions, "--model", two, "--out", tmp_path / "two1b",
         "--store", stores / "clip"],
    ])  # fmt: skip
    assert results[0]["code"] == 0 and results[1]["code"] == 0, results[1]["stderr"][-3000:]
    assert "stores: clip (kept), dinov2 (encoded)" in results[1]["stdout"], results[1]["stdout"]
    assert all(_files(stores / name) == files for name, files in before.items())
    assert results[2]["code"] == 0, results[2]["stderr"][-3000:]
    assert_one_line_error(results[3], "no store holds the features of the model's dinov2 tower")


def test_online_loss_equals_cached_loss_with_three_towers(parts, synthetic_root, tmp_path):
    """Pixels through all three towers, and the fp32 stores' rows of the same images, give the same loss."""
    from sgeo.model import load_model
    from sgeo.pipeline.features import decode
    from sgeo.pipeline.images import load_image

    model_dir, stores = tmp_path / "three", tmp_path / "stores"
    results = run_sgeo_batch([
        _compose(parts, model_dir, "clip", "moge", "depth_anything"),
        ["extract", "--root", synthetic_root, "--store", stores, "--model", model_dir, "--limit", "4", *STORE_ARGS],
    ])  # fmt: skip
    assert all(r["code"] == 0 for r in results), results[-1]["stderr"][-3000:]
    model, processor = load_model(str(model_dir))
    features = open_extracted(stores, towers=("clip", "moge", "depth_anything"))
    image_id = features.manifest().column("image_id").to_pylist()[0]
    turns = [{"from": "human", "value": "<image>\nWhere is it?"}, {"from": "gpt", "value": "On the left."}]
    batch = processor(turns, images=[load_image(synthetic_root / image_id)[0]])
    cached = {name: decode(w, features.dtypes[name]) for name, w in features.read([0]).items()}
    with torch.no_grad():
        online = model(**batch).loss
        text = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
        from_stores = model(**text, image_features=cached).loss
    assert set(cached) == {"clip", "moge", "depth_anything"}
    assert torch.isfinite(online) and abs(float(online) - float(from_stores)) <= 1e-5


def test_a_mismatched_tower_store_is_refused(parts, tiny_dir, synthetic_root, tmp_path):
    """The MoGe store of another layer choice: train refuses it in one line naming the differing key."""
    stores, other = tmp_path / "stores", tmp_path / "other"
    results = run_sgeo_batch([["extract", "--root", synthetic_root, "--store", stores, "--model", tiny_dir,
                               "--limit", "8", *STORE_ARGS]])  # fmt: skip
    assert results[0]["code"] == 0, results[0]["stderr"][-3000:]
    config = json.loads((tiny_dir / "config.json").read_text())
    config["vision_towers"][1]["layers"] = [-3, -2, -1]
    other.mkdir()
    for item in tiny_dir.iterdir():
        if item.name != "config.json":
            os.symlink(item, other / item.name)
    config["vision_towers"] = [
        {**t, "source": str((tiny_dir / t["source"]).resolve())} for t in config["vision_towers"]
    ]
    (other / "config.json").write_text(json.dumps(config))
    result = run_sgeo_batch([["train", "--stage", "1", "--data", synthetic_root / "captions.json", "--model",
                              other, "--store", stores, "--out", tmp_path / "out", "--max-steps", "1"]])[0]  # fmt: skip
    assert_one_line_error(result, "stores", "moge", "tower.layers")
