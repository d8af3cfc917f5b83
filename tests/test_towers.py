"""Tower contracts: pixels -> (B, T, D) of a chosen layer, CLS dropped, for both CLIP backends and MoGe."""

from __future__ import annotations

import json

import pytest
import torch

from sgeo.model import SpatialGeoConfig
from sgeo.model.towers import HFCLIPTower, MoGeTower, OpenCLIPTower


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
    tower = OpenCLIPTower(_open_clip_config(open_clip_dir), str(open_clip_dir)).eval()
    captured = {}
    blocks = tower.visual.transformer.resblocks
    blocks[-2].register_forward_hook(lambda module, args, out: captured.setdefault("penultimate", out))
    pixels = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        tokens = tower(pixels)
    assert tokens.shape == (2, 64, 64)
    assert torch.equal(tokens, captured["penultimate"][:, 1:])
    with pytest.raises(ValueError, match="does not name"):
        OpenCLIPTower(_open_clip_config(open_clip_dir, layer=9), str(open_clip_dir))(pixels)


def test_open_clip_loads_its_checkpoint(open_clip_dir):
    from safetensors.torch import load_file

    tower = OpenCLIPTower(_open_clip_config(open_clip_dir), str(open_clip_dir))
    saved = load_file(open_clip_dir / "open_clip_model.safetensors")
    assert torch.equal(tower.visual.conv1.weight, saved["visual.conv1.weight"])


def test_hf_and_moge_towers_follow_the_contract(tiny_dir):
    from sgeo.model import resolve_model

    resolved = resolve_model(str(tiny_dir))
    config = resolved.config
    clip = HFCLIPTower(config, resolved.clip.path).eval()
    moge = MoGeTower(config, resolved.moge.path).eval()
    pixels = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        clip_tokens = clip(pixels)
        hidden = clip.model(pixels, output_hidden_states=True).hidden_states
        moge_tokens = moge(pixels)
        last = moge.backbone.get_intermediate_layers(pixels, n=1, norm=True)[0]
    assert clip_tokens.shape == (1, 64, 64) and torch.equal(clip_tokens, hidden[-2][:, 1:])
    assert moge_tokens.shape == (1, 4, 64, 384)
    assert torch.equal(moge_tokens[:, -1], last)  # the last of the four blocks, normed, CLS dropped


def test_moge_input_option_renormalises(tiny_dir):
    from sgeo.model import resolve_model

    resolved = resolve_model(str(tiny_dir))
    config, path = SpatialGeoConfig.from_pretrained(tiny_dir), resolved.moge.path
    reference = MoGeTower(config, path).eval()
    config.moge_input = "moge"
    own = MoGeTower(config, path).eval()
    pixels = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert not torch.allclose(reference(pixels), own(pixels))
