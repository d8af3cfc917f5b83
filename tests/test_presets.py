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
from sgeo.model.presets import TINY_VERSION


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
        "clip_tower": 290.9e6,  # what it computes: 23 of CLIP-L/14's 24 blocks (303.5M), LLaVA reads block 23
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
    assert (tmp_path / "presets" / TINY_VERSION / "spatialgeo" / "config.json").exists()


def test_demo_preset_is_tiny_with_position_aware_towers_and_a_wider_llm(tmp_path):
    """The quickstart's preset: materialised in the home like tiny, with its own sizes in the written configs."""
    result = run_sgeo("info", "--model", "demo", "--json", check=True, env={"SGEO_HOME": str(tmp_path)})
    info = json.loads(result.stdout)
    root = tmp_path / "presets" / "demo-v1"
    llm = json.loads((root / "llm" / "config.json").read_text())
    assert (llm["hidden_size"], llm["intermediate_size"], llm["initializer_range"]) == (128, 352, 0.0884)
    assert json.loads((root / "spatialgeo" / "config.json").read_text())["text_config"]["hidden_size"] == 128
    tiny = json.loads(run_sgeo("info", "--model", "tiny", "--json", check=True,
                               env={"SGEO_HOME": str(tmp_path)}).stdout)  # fmt: skip
    assert info["parameters"] != tiny["parameters"]


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


def test_sin_cos_position_embeddings_make_patch_tokens_say_where_they_are(tmp_path):
    """On an image of one colour, patch tokens differ only by position: with the libraries' std-0.02
    position init they are nearly alike; the sin-cos option (written into the real files, read back through
    the real loaders) makes them differ, and the table is the 2D sin-cos grid."""
    from dataclasses import replace

    import torch
    from PIL import Image
    from timm.layers import build_sincos2d_pos_embed
    from transformers import CLIPVisionModel

    from sgeo.model.loading import load_encoders, load_processor
    from sgeo.model.random_init.sizes import TINY
    from sgeo.model.random_init.writer import write_random_init

    image = Image.new("RGB", (112, 112), (150, 150, 150))
    spread = {}
    for scale in (0.0, 1.0):
        model_dir = write_random_init(
            tmp_path / str(scale), sizes=replace(TINY, position_embedding_scale=scale)
        )
        pixels = load_processor(str(model_dir)).preprocess_images([image])
        features = load_encoders(str(model_dir)).encode_images(pixels)
        clip, moge = features["clip"], features["moge"]
        # how much the patch tokens differ from each other, against their own size
        spread[scale] = [float(t.std(dim=-2).mean() / t.std()) for t in (clip[0], moge[0, -1])]
    table = CLIPVisionModel.from_pretrained(tmp_path / "1.0" / "clip").state_dict()
    positions = next(v for k, v in table.items() if k.endswith("position_embedding.weight"))
    assert torch.allclose(positions[1:], build_sincos2d_pos_embed([8, 8], dim=positions.shape[1]))
    for tower, before, after in zip(("clip", "moge"), spread[0.0], spread[1.0], strict=True):
        assert after > 3 * before, (tower, before, after)


def test_llm_init_std_sets_the_llm_and_adapter_init(tmp_path):
    from dataclasses import replace

    from transformers import LlamaForCausalLM

    from sgeo.model.loading import load_model
    from sgeo.model.random_init.sizes import TINY
    from sgeo.model.random_init.writer import write_random_init

    model_dir = write_random_init(tmp_path, sizes=replace(TINY, llm_init_std=0.125))
    llm = LlamaForCausalLM.from_pretrained(tmp_path / "llm")
    assert llm.config.initializer_range == 0.125
    model, _ = load_model(str(model_dir), load_towers=False)
    for weight in (llm.model.layers[0].self_attn.q_proj.weight, model.clip_adapter[0].weight):
        assert abs(float(weight.detach().std()) - 0.125) < 0.0125  # TINY's default, 0.02, is far outside
