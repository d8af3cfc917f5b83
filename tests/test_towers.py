"""Tower contracts: pixels -> (B, T, D) of a chosen layer (or (B, L, T, D) of several), CLS dropped, for both
CLIP backends and MoGe; each computes only the blocks it returns, with the values of the whole model."""

from __future__ import annotations

import json

import pytest
import torch

from sgeo.model import SpatialGeoConfig
from sgeo.model.towers.stack import VisionTowers


def _towers(config, paths: dict) -> VisionTowers:
    return VisionTowers(config.towers, paths).eval()


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    """A tiny open_clip model saved as a `local-dir:` checkpoint (config + safetensors), random init."""
    import open_clip
    from safetensors.torch import save_file

    directory = tmp_path_factory.mktemp("open_clip_tiny")
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 112, "layers": 3, "width": 64, "patch_size": 14, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}})
    )
    torch.manual_seed(0)
    save_file(open_clip.CLIP(**model_cfg).state_dict(), directory / "open_clip_model.safetensors")
    return directory


def _open_clip_config(directory, layer=-2) -> SpatialGeoConfig:
    return SpatialGeoConfig(
        clip_backend="open_clip",
        clip_model_name=f"local-dir:{directory}",
        clip_path=str(directory),
        clip_hidden_size=64,
        image_size=112,
        patch_size=14,
        clip_layer=layer,
        moge_backbone="dinov2_vits14",
    )


def test_open_clip_tower_returns_the_chosen_block_without_cls(open_clip_dir):
    tower = _towers(_open_clip_config(open_clip_dir), {"clip": str(open_clip_dir)}).towers["clip"]
    captured = {}
    blocks = tower.visual.transformer.resblocks
    blocks[-2].register_forward_hook(lambda module, args, out: captured.setdefault("penultimate", out))
    pixels = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        tokens = tower(pixels)
    assert tokens.shape == (2, 64, 64)
    assert torch.equal(tokens, captured["penultimate"][:, 1:])
    with pytest.raises(ValueError, match="names none of the 3 blocks"):
        _towers(_open_clip_config(open_clip_dir, layer=9), {"clip": str(open_clip_dir)})


def test_open_clip_loads_its_checkpoint(open_clip_dir):
    from safetensors.torch import load_file

    tower = _towers(_open_clip_config(open_clip_dir), {"clip": str(open_clip_dir)}).towers["clip"]
    saved = load_file(open_clip_dir / "open_clip_model.safetensors")
    assert torch.equal(tower.visual.conv1.weight, saved["visual.conv1.weight"])


def test_hf_and_moge_towers_follow_the_contract(tiny_dir):
    """The towers give what the whole models give, bit for bit in fp32, while holding only the blocks read."""
    from moge.model.v1 import MoGeModel
    from transformers import CLIPVisionModel

    from sgeo.model import resolve_model

    resolved = resolve_model(str(tiny_dir))
    towers = _towers(resolved.config, {n: located.path for n, located in resolved.towers.items()})
    whole_clip = CLIPVisionModel.from_pretrained(resolved.towers["clip"].path).eval()
    whole_moge = MoGeModel.from_pretrained(resolved.towers["moge"].path).backbone.eval()
    pixels = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        features = towers(pixels)
        hidden = whole_clip(pixels, output_hidden_states=True).hidden_states
        last_four = whole_moge.get_intermediate_layers(pixels, n=4, norm=True)
    assert features["clip"].shape == (2, 64, 64) and torch.equal(features["clip"], hidden[-2][:, 1:])
    assert features["moge"].shape == (2, 4, 64, 384)
    assert torch.equal(features["moge"], torch.stack(last_four, dim=1))
    # CLIP reads block 2 of 3 (layer -2): the third is not computed, nor kept
    assert len(towers.towers["clip"].model.encoder.layers) == len(whole_clip.encoder.layers) - 1


def test_moge_reads_only_up_to_its_last_block(tiny_dir):
    """A MoGe tower reading blocks 2 and 4 (of 12) holds four blocks and gives the whole backbone's values."""
    from moge.model.v1 import MoGeModel

    from sgeo.model import resolve_model

    resolved = resolve_model(str(tiny_dir))
    config = SpatialGeoConfig.from_pretrained(tiny_dir)
    config.vision_towers[1]["layers"] = [2, 4]
    paths = {n: located.path for n, located in resolved.towers.items()}
    moge = _towers(config, paths).towers["moge"]
    whole = MoGeModel.from_pretrained(paths["moge"]).backbone.eval()
    pixels = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        expected = torch.stack(whole.get_intermediate_layers(pixels, n=[1, 3], norm=True), dim=1)
        assert torch.equal(moge(pixels), expected)
    assert len(moge.backbone.blocks) == 4


def test_a_tower_reading_its_own_input_renormalises(tiny_dir):
    from sgeo.model import resolve_model

    resolved = resolve_model(str(tiny_dir))
    config = SpatialGeoConfig.from_pretrained(tiny_dir)
    paths = {"moge": resolved.towers["moge"].path}
    reference = _towers(config, paths)
    config.vision_towers[1]["input"] = "own"
    own = _towers(config, paths)
    pixels = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert not torch.allclose(reference(pixels)["moge"], own(pixels)["moge"])
