"""Presets: the tiny preset is deterministic and loads through real loaders; the 7B preset needs no weights
for `info` and names what is missing otherwise."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_sgeo


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_tiny_is_byte_identical_in_two_homes(tmp_path):
    code = "from sgeo.model import resolve_model; print(resolve_model('tiny').directory)"
    dirs = []
    for name in ("a", "b"):
        env = {**os.environ, "SGEO_HOME": str(tmp_path / name)}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        dirs.append(Path(out.stdout.strip().splitlines()[-1]).parent)
    first, second = _tree_hashes(dirs[0]), _tree_hashes(dirs[1])
    assert first == second
    assert {"clip/model.safetensors", "moge/model.pt", "llm/tokenizer.json", "spatialgeo/config.json"} <= set(
        first
    )


def test_tiny_parts_load_through_their_real_loaders(tiny_dir):
    import torch
    from moge.model.v1 import MoGeModel
    from transformers import AutoTokenizer, CLIPVisionModel, LlamaForCausalLM

    root = tiny_dir.parent
    assert CLIPVisionModel.from_pretrained(root / "clip").config.image_size == 112
    moge = MoGeModel.from_pretrained(str(root / "moge" / "model.pt"))
    assert moge.encoder == "dinov2_vits14"
    checkpoint = torch.load(root / "moge" / "model.pt", weights_only=True)
    assert set(checkpoint) == {"model_config", "model"}
    assert LlamaForCausalLM.from_pretrained(root / "llm").config.num_hidden_layers == 2
    tokenizer = AutoTokenizer.from_pretrained(root / "llm")
    assert tokenizer.decode(tokenizer("the red box")["input_ids"], skip_special_tokens=True) == "the red box"


def test_info_for_the_reference_model_needs_no_weights(tmp_path):
    result = run_sgeo(
        "info", "--model", "spatialgeo-7b", "--json", check=True, env={"SGEO_HOME": str(tmp_path)}
    )
    counts = json.loads(result.stdout)["parameters"]
    expected = {
        "clip_tower": 303.5e6,
        "clip_adapter": 20.98e6,
        "moge_adapter": 4 * 20.98e6,
        "llm": 6738.4e6,
        "moge_tower": 304e6,
    }
    for part, value in expected.items():
        assert abs(counts[part] - value) / value < 0.005, (part, counts[part])
    assert abs(counts["clip_adapter"] + counts["moge_adapter"] - 104.9e6) / 104.9e6 < 0.005
    assert counts["trainable_stage1"] == counts["moge_adapter"]
    assert not any((tmp_path / "presets").glob("*")) if (tmp_path / "presets").exists() else True


def test_info_materialises_tiny(tmp_path):
    result = run_sgeo("info", "--model", "tiny", "--json", check=True, env={"SGEO_HOME": str(tmp_path)})
    assert json.loads(result.stdout)["visual_tokens_per_image"] == 128
    assert (tmp_path / "presets" / "tiny-v1" / "spatialgeo" / "config.json").exists()


def test_reference_model_without_weights_is_a_one_line_error(tmp_path):
    env = {
        "SGEO_HOME": str(tmp_path),
        "HF_HOME": str(tmp_path / "hf"),
        "SGEO_CLIP_PATH": "",
        "HF_HUB_OFFLINE": "1",
    }
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    result = run_sgeo("ask", image, "hi?", "--model", "spatialgeo-7b", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SGEO_" in lines[0] and "spatialgeo-7b" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model", ["/no/such/dir", "tinyy"])
def test_bad_model_is_a_one_line_error(model):
    result = run_sgeo("info", "--model", model)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
