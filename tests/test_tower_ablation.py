"""bench/tower_ablation.py at its smallest: three models sharing one stores directory, where the second and third
extract encode only their new tower (the CLIP store is kept), each trained and scored; and the geometry towers
it writes are the public layouts with the demo preset's sin-cos position tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from conftest import REPO

BENCH = REPO / "bench" / "tower_ablation.py"


def _bench(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def test_ablation_encodes_each_tower_once_and_scores_three_models(tiny_dir, tmp_path):
    # the tiny preset's LLM and CLIP (the session's, already written); 16 images, 1 stage-2 step
    work = tmp_path / "work"
    out = _bench("--n", 16, "--n-eval", 2, "--steps", 1, "--preset", "tiny", "--num-cpus", 2, "--work", work)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((work / "ablation.json").read_text())
    runs = {run["label"]: run for run in result["runs"]}
    assert list(runs) == ["CLIP+MoGe", "CLIP+DINOv2", "CLIP+Depth Anything"]
    assert runs["CLIP+MoGe"]["encoded"] == {"clip": 16, "moge": 16}
    assert runs["CLIP+DINOv2"]["encoded"] == {"clip": 0, "dinov2": 16}
    assert runs["CLIP+Depth Anything"]["encoded"] == {"clip": 0, "depth_anything": 16}
    assert "stores: clip (kept), dinov2 (encoded)" in out.stdout
    assert "stores: clip (kept), depth_anything (encoded)" in out.stdout
    assert sorted(p.name for p in (work / "stores").iterdir()) == ["clip", "depth_anything", "dinov2", "moge"]
    for run in runs.values():  # each model was trained and scored on the 2 held-out images' 8 questions
        assert run["scores"]["overall"]["n"] == 8
        assert json.loads((Path(run["model"]) / "config.json").read_text())["vision_towers"]
    table = out.stdout[out.stdout.index("images encoded by each model's extract") :]
    assert "CLIP+DINOv2          clip 0 (kept), dinov2 16" in table
    header = next(line for line in table.splitlines() if line.lstrip().startswith("n "))
    assert header.split() == ["n", "CLIP+MoGe", "CLIP+DINOv2", "CLIP+Depth", "Anything", "constant", "answer"]
    assert "[category]" in table and "left_predicate" in table  # scores per category

    # the towers it wrote: the published configs, and a position table that is the demo's sin-cos grid
    from safetensors.torch import load_file
    from timm.layers import build_sincos2d_pos_embed

    from sgeo.model.random_init.geometry_towers import DEPTH_ANYTHING_V2_SMALL, DINOV2_SMALL
    from sgeo.model.random_init.sizes import DEMO

    for folder, published, key in (
        ("dinov2", DINOV2_SMALL, "embeddings.position_embeddings"),
        ("depth-anything", DEPTH_ANYTHING_V2_SMALL, "backbone.embeddings.position_embeddings"),
    ):
        directory = work / "towers" / folder
        assert json.loads((directory / "config.json").read_text()) == published
        table = load_file(directory / "model.safetensors")[key][0]
        sincos = DEMO.position_embedding_scale * build_sincos2d_pos_embed([37, 37], dim=384)
        assert torch.equal(table[0], torch.zeros(384)) and torch.allclose(table[1:], sincos)


def test_a_bad_budget_is_refused_in_one_line(tmp_path):
    out = _bench("--steps", "0", "--work", tmp_path / "work", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        out.stderr.strip().splitlines()[-1]
        == "error: --steps must be a positive number of stage-2 steps, got 0"
    )
    assert not (tmp_path / "work").exists()  # refused before any work
