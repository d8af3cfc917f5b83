"""Import of reference-format checkpoints (LLaVA-1.5 and SpatialGeo, incl. its LoRA release), written here
from the tiny preset in those exact key layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sgeo.errors import SgeoError
from sgeo.model import load_model
from sgeo.model.reference import map_reference_key


def _reference_state(model, with_moge: bool) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("clip_adapter."):
            state["model.mm_projector." + key.removeprefix("clip_adapter.")] = value.clone()
        elif key.startswith("moge_adapter.adapters.") and with_moge:
            state["model.moge_mm_projector_list." + key.removeprefix("moge_adapter.adapters.")] = (
                value.clone()
            )
        elif key.startswith("language_model."):
            state[key.removeprefix("language_model.")] = value.clone()
    state["model.vision_tower.vision_tower.embeddings.patch_embedding.weight"] = torch.zeros(
        2
    )  # dropped on import
    return state


def _write_reference(directory: Path, model, processor, state: dict, clip_dir: Path) -> Path:
    directory.mkdir(parents=True)
    config = model.config.text_config.to_dict()
    config.update(
        architectures=["LlavaLlamaForCausalLM"],
        model_type="llava_llama",
        mm_projector_type="mlp2x_gelu",
        mm_vision_tower=str(clip_dir),
        mm_vision_select_layer=-2,
        mm_hidden_size=model.config.tower("clip").hidden_size,
    )
    (directory / "config.json").write_text(json.dumps(config))
    torch.save(state, directory / "pytorch_model.bin")
    processor.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_parts(tiny_dir):
    model, processor = load_model(str(tiny_dir), load_towers=False)
    torch.manual_seed(5)
    with torch.no_grad():  # distinctive adapter weights, so a wrong mapping cannot pass by chance
        for p in list(model.clip_adapter.parameters()) + list(model.moge_adapter.parameters()):
            p.normal_()
    root = tiny_dir.parent
    return model, processor, root / "clip", root / "moge" / "model.pt"


@pytest.fixture()
def moge_env(tiny_parts, monkeypatch):
    monkeypatch.setenv("SGEO_MOGE_PATH", str(tiny_parts[3]))


def test_key_mapping():
    assert map_reference_key("model.mm_projector.2.bias") == "clip_adapter.2.bias"
    assert map_reference_key("model.moge_mm_projector_list.3.0.weight") == "moge_adapter.adapters.3.0.weight"
    assert map_reference_key("base_model.model.model.mm_projector.0.weight") == "clip_adapter.0.weight"
    assert (
        map_reference_key("model.layers.0.mlp.up_proj.weight")
        == "language_model.model.layers.0.mlp.up_proj.weight"
    )
    assert map_reference_key("lm_head.weight") == "language_model.lm_head.weight"
    assert map_reference_key("model.vision_tower.vision_tower.x") is None


def test_llava_checkpoint_imports_with_fresh_moge_adapter(tmp_path, tiny_parts, moge_env):
    model, processor, clip_dir, _ = tiny_parts
    ref = _write_reference(
        tmp_path / "llava", model, processor, _reference_state(model, with_moge=False), clip_dir
    )
    imported, imported_processor = load_model(str(ref))
    ours, theirs = model.state_dict(), imported.state_dict()
    for key in ours:
        if key.startswith("moge_adapter."):
            assert not torch.equal(ours[key], theirs[key]), key  # not in LLaVA: freshly initialised
        else:
            assert torch.equal(ours[key], theirs[key]), key
    again, _ = load_model(str(ref), load_towers=False)
    assert torch.equal(again.moge_adapter.adapters[0][0].weight, imported.moge_adapter.adapters[0][0].weight)
    assert imported_processor.image_token_id == imported.config.image_token_id
    batch = imported_processor(
        [{"from": "human", "value": "<image>\nHi"}, {"from": "gpt", "value": "Yo"}],
        images=__import__("PIL.Image").Image.new("RGB", (50, 40)),
    )
    assert torch.isfinite(imported(**batch).loss)


def test_mismatched_checkpoint_is_a_one_line_error(tmp_path, tiny_parts, moge_env):
    model, processor, clip_dir, _ = tiny_parts
    state = _reference_state(model, with_moge=False)
    state["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 3)
    ref = _write_reference(tmp_path / "bad_shape", model, processor, state, clip_dir)
    with pytest.raises(SgeoError, match="size mismatch|does not fit|mismatched") as error:
        load_model(str(ref), load_towers=False)
    assert "\n" not in str(error.value)

    state = _reference_state(model, with_moge=False)
    state.pop("model.norm.weight")
    ref = _write_reference(tmp_path / "missing_key", model, processor, state, clip_dir)
    with pytest.raises(SgeoError, match="missing .*model.norm.weight"):
        load_model(str(ref), load_towers=False)

    state = _reference_state(model, with_moge=False)
    state["model.mm_projector.0.weight"] = torch.zeros(3, 3)
    ref = _write_reference(tmp_path / "bad_adapter", model, processor, state, clip_dir)
    with pytest.raises(SgeoError, match="clip_adapter.0.weight has shape"):
        load_model(str(ref), load_towers=False)

    empty = tmp_path / "empty"
    _write_reference(empty, model, processor, {}, clip_dir)
    (empty / "pytorch_model.bin").unlink()
    with pytest.raises(SgeoError, match="without weights"):
        load_model(str(empty), load_towers=False)
