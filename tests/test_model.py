"""The SpatialGeo model on the tiny preset: online vs cached equivalence, the merge, generation, stages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from sgeo.model import SpatialGeoConfig, SpatialGeoForCausalLM, configure_stage, load_model
from sgeo.model.fusion import interleave
from sgeo.model.stages import LoraSettings


def _image(color=(200, 30, 30), size=(160, 120)) -> Image.Image:
    image = Image.new("RGB", size, (240, 240, 240))
    image.paste(color, (20, 30, 70, 90))
    return image


CONVERSATION = [
    {"from": "human", "value": "<image>\nWhere is the red box?"},
    {"from": "gpt", "value": "The red box is on the left."},
]


def test_online_and_cached_losses_are_equal(tiny):
    model, processor = tiny
    batch = processor(CONVERSATION, images=[_image()])
    with torch.no_grad():
        online = model(**batch).loss
        features = model.encode_images(batch["pixel_values"])
        cached = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            image_features=features,
        ).loss
    assert torch.isfinite(online)
    assert (online - cached).abs().item() <= 1e-5


def test_encode_images_returns_store_shapes(tiny):
    model, processor = tiny
    pixels = processor.preprocess_images([_image(), _image((20, 200, 20), (90, 140))])
    features = model.encode_images(pixels)
    assert {name: tuple(f.shape[1:]) for name, f in features.items()} == model.config.feature_shapes
    assert features["moge"].shape[1] == 4  # SpatialGeo's last four blocks
    # Each image is encoded on its own: batching must not change the numbers.
    single = model.encode_images(pixels[1:])
    assert all(torch.equal(features[name][1:], single[name]) for name in features)


def test_greedy_generation_is_the_same_from_pixels_and_features(tiny):
    model, processor = tiny
    batch = processor(CONVERSATION[:1], images=[_image()], add_generation_prompt=True)
    kwargs = {"max_new_tokens": 6, "do_sample": False}
    from_pixels = model.generate(
        batch["input_ids"], batch["attention_mask"], pixel_values=batch["pixel_values"], **kwargs
    )
    features = model.encode_images(batch["pixel_values"])
    from_features = model.generate(
        batch["input_ids"], batch["attention_mask"], image_features=features, **kwargs
    )
    without_cache = model.generate(
        batch["input_ids"],
        batch["attention_mask"],
        image_features=features,
        use_cache=False,
        **kwargs,
    )
    assert from_pixels.shape[1] >= 1
    assert torch.equal(from_pixels, from_features)
    assert torch.equal(from_features, without_cache)


def test_token_feature_count_mismatch_raises_with_both_counts(tiny):
    model, processor = tiny
    batch = processor(CONVERSATION, images=[_image()])
    features = model.encode_images(torch.cat([batch["pixel_values"]] * 2))
    with pytest.raises(ValueError, match=r"tokens: 128, features: 256"):
        model(input_ids=batch["input_ids"], image_features=features)
    with pytest.raises(ValueError, match="not both"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], image_features=features)
    with pytest.raises(ValueError, match=r"lack towers \['moge'\]"):
        model(input_ids=batch["input_ids"], image_features={"clip": features["clip"][:1]})
    with pytest.raises(ValueError, match="no image was given"):
        model(input_ids=batch["input_ids"])


def test_visual_tokens_land_interleaved_at_the_image_positions(tiny):
    model, processor = tiny
    batch = processor(CONVERSATION, images=[_image()])
    features = model.encode_images(batch["pixel_values"])
    embeds = model.embed_inputs(batch["input_ids"], image_features=features)
    positions = (batch["input_ids"][0] == model.config.image_token_id).nonzero().flatten()
    clip_tokens, moge_tokens = model.clip_adapter(features["clip"]), model.moge_adapter(features["moge"])
    assert torch.equal(embeds[0, positions[0]], clip_tokens[0, 0])
    assert torch.equal(embeds[0, positions[1]], moge_tokens[0, 0])
    assert torch.equal(embeds[0, positions[-1]], moge_tokens[0, -1])
    assert torch.equal(interleave([clip_tokens, moge_tokens])[0, 2], clip_tokens[0, 1])
    # Text positions keep their token embeddings.
    assert torch.equal(embeds[0, 0], model.get_input_embeddings().weight[batch["input_ids"][0, 0]])


def test_batched_merge_matches_one_by_one(tiny):
    model, processor = tiny
    second = [{"from": "human", "value": "<image>\nIs it big?"}, {"from": "gpt", "value": "No."}]
    tokens = [processor.tokenize(CONVERSATION, "vicuna_v1"), processor.tokenize(second, "vicuna_v1")]
    batch = processor.pad(tokens)
    pixels = processor.preprocess_images([_image(), _image((10, 10, 200))])
    features = model.encode_images(pixels)
    merged = model.embed_inputs(batch["input_ids"], image_features=features)
    for i in range(2):
        n = len(tokens[i]["input_ids"])
        one = {name: f[i : i + 1] for name, f in features.items()}
        alone = model.embed_inputs(batch["input_ids"][i : i + 1, :n], image_features=one)
        assert torch.equal(merged[i, :n], alone[0])


def _trainable_parts(model) -> set[str]:
    return {
        name.split(".")[0] + (".lora" if "lora_" in name else "")
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def test_stage_trainable_sets(tiny_dir):
    model, _ = load_model(str(tiny_dir), load_towers=False)
    names = configure_stage(model, 1)
    assert names and all(n.startswith("moge_adapter.") for n in names)
    assert len(names) == len(list(model.moge_adapter.parameters()))

    names = configure_stage(model, 2, LoraSettings(r=4, alpha=8))
    assert _trainable_parts(model) == {"clip_adapter", "moge_adapter", "language_model.lora"}
    lora = [n for n in names if "lora_" in n]
    # LoRA on every linear layer of the LLM (7 per Llama block), A and B each, none on the output head.
    assert len(lora) == 2 * 7 * model.config.text_config.num_hidden_layers
    assert not any("lm_head" in n for n in lora)
    assert model.towers is None  # never constructed for training from features

    with pytest.raises(ValueError, match="stage must be one of"):
        configure_stage(model, 3)


def test_towers_stay_frozen(tiny_dir):
    model, _ = load_model(str(tiny_dir))
    configure_stage(model, 2, LoraSettings(r=4, alpha=8))
    assert not any(p.requires_grad for p in model.towers.parameters())
    model.train()
    assert not model.towers.training


def test_config_json_round_trip_and_validation(tmp_path, tiny_dir):
    config = SpatialGeoConfig.from_pretrained(tiny_dir)
    config.save_pretrained(tmp_path)
    again = SpatialGeoConfig.from_pretrained(tmp_path)
    where = "_name_or_path"  # records each config's own directory
    assert {k: v for k, v in again.to_dict().items() if k != where} == {
        k: v for k, v in config.to_dict().items() if k != where
    }
    assert again.num_image_tokens == 2 * 64 == 128  # 8 x 8 patches, one token of each tower per patch
    with pytest.raises(ValueError, match="adapter='qformer'"):
        SpatialGeoConfig(adapter_type="qformer")
    with pytest.raises(ValueError, match="fusion"):
        SpatialGeoConfig(fusion="sum")


def test_configs_written_before_towers_were_a_list_load_as_the_same_towers(tmp_path, tiny_dir):
    """A config.json with SpatialGeo's fields (clip_path, moge_layers, ...) and no `vision_towers` (what sgeo
    wrote before) loads as the tower list the new config writes, and the model built from it is the same."""
    config = SpatialGeoConfig.from_pretrained(tiny_dir)
    raw = json.loads((tiny_dir / "config.json").read_text())
    clip, moge = raw.pop("vision_towers")
    raw.update(clip_backend="hf", clip_path=clip["source"], clip_vision_config=clip["options"]["vision_config"],
               clip_layer=-2, moge_path=moge["source"], moge_backbone="dinov2_vits14", moge_layers=4,
               moge_input="clip", adapter_type="mlp2x_gelu")  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(raw))
    old = SpatialGeoConfig.from_pretrained(tmp_path)
    assert old.vision_towers == config.vision_towers
    assert "clip_path" not in old.to_dict()  # saved again, it is written as a list


@pytest.mark.parametrize("field", ["moge_normalisation", "moge_input"])
def test_moge_normalisation_selects_moges_own_statistics_under_its_former_name_too(tiny_dir, field):
    """`moge_normalisation="moge"` (called `moge_input` in configs written before) gives MoGe its own input
    (ImageNet statistics); the default, `clip`, the pixels CLIP reads, as the reference; the former name is
    not left behind as an attribute of its own."""
    raw = {
        k: v for k, v in json.loads((tiny_dir / "config.json").read_text()).items() if k != "vision_towers"
    }
    clip = dict(clip_path="../clip", moge_path="../moge/model.pt", moge_backbone="dinov2_vits14")
    default = SpatialGeoConfig(**{**raw, **clip})
    own = SpatialGeoConfig(**{**raw, **clip, field: "moge"})
    assert [t.input for t in default.towers] == ["shared", "shared"]
    assert [t.input for t in own.towers] == ["shared", "own"]
    assert field not in own.to_dict()
    with pytest.raises(ValueError, match="moge_normalisation='imagenet'"):
        SpatialGeoConfig(**{**raw, **clip, field: "imagenet"})


def test_save_pretrained_round_trip_keeps_towers_out(tmp_path, tiny_dir):
    model, processor = load_model(str(tiny_dir))
    model.save_pretrained(tmp_path / "copy")
    processor.save_pretrained(tmp_path / "copy")
    from safetensors import safe_open

    with safe_open(tmp_path / "copy" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("towers.") for k in keys)
    reloaded, _ = load_model(str(tmp_path / "copy"))
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert isinstance(reloaded, SpatialGeoForCausalLM)


def test_importing_the_model_pulls_no_infrastructure():
    code = "import sys, sgeo.model; print(sorted(m for m in ('ray', 'zarr', 'typer', 'deepspeed') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_configs_name_lists_equal_what_is_implemented():
    """The config validates against names (it imports no modeling code): each list equals its registry."""
    from sgeo.model import configuration, fusion, tower_spec
    from sgeo.model.adapters import adapter_types

    assert sorted(configuration.FUSIONS) == sorted(fusion.FUSIONS)
    assert sorted(tower_spec.ADAPTERS) == adapter_types()
