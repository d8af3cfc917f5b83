"""The siglip, dinov2 and depth_anything tower kinds (and MoGe-2 through the moge kind), each built from a stand-in
in its public layout (tests/tower_layouts.py) the way a model builds it: `spec_from_source` -> `VisionTowers`.

Each tower's features are checked bit for bit (fp32) against what the library's own model gives for the same
pixels, and each truncated model is checked to hold no block beyond the last one read.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from sgeo.errors import SgeoError
from sgeo.model.hub import Located
from sgeo.model.towers.registry import KINDS, tower_class
from sgeo.model.towers.specs import parse_tower_option, spec_from_source
from sgeo.model.towers.stack import VisionTowers
from tower_layouts import (
    DEPTH_ANYTHING_OUT_INDICES,
    MOGE2_BLOCKS,
    write_depth_anything,
    write_dinov2,
    write_moge2,
    write_siglip,
    write_siglip2_naflex,
)

SHARED = 56  # the shared pixel size the any-size kinds read at (4 x 4 patches of 14)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tower_layouts")
    return {
        "siglip": write_siglip(root / "siglip-so400m-patch14-384"),
        "siglip2": write_siglip2_naflex(root / "siglip2-so400m-patch16-naflex"),
        "dinov2": write_dinov2(root / "dinov2-large"),
        "depth_anything": write_depth_anything(root / "Depth-Anything-V2-Large-hf"),
        "moge2": write_moge2(root / "moge-2-vitl"),
    }


def _spec(kind, path, layers=None, shared_size=None, name=None):
    return spec_from_source(kind, name or kind, Located(str(path), str(path)), layers, shared_size)


def _build(spec, path):
    towers = VisionTowers([spec], {spec.name: str(path)})
    return towers, towers.towers[spec.name]


def _pixels(size, batch=2, seed=0):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- the registry ----------------------------------------------------------------------------------------------


def test_every_registered_class_names_its_own_kind():
    for kind, target in KINDS.items():
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        assert cls.kind == kind, f"{target} says kind {cls.kind!r}, registered as {kind!r}"
        assert tower_class(kind) is cls
    assert {"siglip", "dinov2", "depth_anything"} <= set(KINDS)


# --- siglip ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [None, -1, 1])
def test_siglip_gives_the_chosen_hidden_state_of_all_patches(layouts, layers):
    from transformers import SiglipVisionModel

    path = layouts["siglip"]
    spec = _spec("siglip", path, layers)
    assert (spec.layers, spec.image_size, spec.patch_size, spec.hidden_size) == (
        -2 if layers is None else layers, 56, 14, 32)  # fmt: skip
    assert spec.input == "shared" and spec.adapter == "mlp2x_gelu"
    towers, tower = _build(spec, path)
    pixels = _pixels(spec.image_size)
    features = towers(pixels)["siglip"]
    assert features.shape == (2, *spec.feature_shape) == (2, 16, 32)  # no CLS: every token a patch

    reference = SiglipVisionModel.from_pretrained(path).eval()
    with torch.no_grad():
        hidden = reference(pixels, output_hidden_states=True).hidden_states
    assert torch.equal(features, hidden[spec.layers])  # the raw block output, before post_layernorm

    # blocks after the one read, the post-norm and the pooling head are not kept
    kept = {-2: 2, -1: 3, 1: 1}[spec.layers]
    assert len(tower.vision.encoder.layers) == kept
    assert tower.vision.post_layernorm is None and tower.vision.head is None
    assert not any(f".layers.{kept}." in name for name, _ in tower.named_parameters())


def test_siglip2_naflex_reads_the_patchified_image(layouts):
    from transformers import Siglip2VisionModel

    path = layouts["siglip2"]
    spec = _spec("siglip", path)
    assert (spec.image_size, spec.patch_size, spec.layers) == (64, 16, -2)  # sqrt(num_patches=16) * 16
    towers, tower = _build(spec, path)
    pixels = _pixels(64)
    features = towers(pixels)["siglip"]
    assert features.shape == (2, 16, 32)

    # the library's own input: Siglip2ImageProcessor's patches, an all-ones mask, the 4 x 4 grid
    from transformers.models.siglip2.image_processing_siglip2 import convert_image_to_patches

    patches = torch.stack([convert_image_to_patches(image, 16) for image in pixels])
    reference = Siglip2VisionModel.from_pretrained(path).eval()
    with torch.no_grad():
        hidden = reference(
            pixel_values=patches, pixel_attention_mask=torch.ones(2, 16, dtype=torch.long),
            spatial_shapes=torch.tensor([[4, 4], [4, 4]]), output_hidden_states=True,
        ).hidden_states  # fmt: skip
    assert torch.equal(features, hidden[-2])
    assert len(tower.vision.encoder.layers) == 2


def test_siglip_as_a_later_tower_reads_its_own_statistics_and_size(layouts):
    """After a 112-px ImageNet-normalised first tower, SigLIP re-normalises to 0.5/0.5 and resizes to 56."""
    first = _spec("dinov2", layouts["dinov2"], shared_size=112, name="geometry")
    spec = _spec("siglip", layouts["siglip"], shared_size=112)
    assert spec.input == "own" and spec.image_size == 56
    towers = VisionTowers([first, spec], {"siglip": str(layouts["siglip"])})  # only SigLIP built
    tower = towers.towers["siglip"]
    assert tower.renormalise and tower.resize
    pixels = _pixels(112)
    assert torch.equal(towers(pixels)["siglip"], tower.encode(tower.prepare(pixels)))


# --- dinov2 ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [None, [1, 3], [-6, -2]])
def test_dinov2_gives_normed_blocks_without_cls(layouts, layers):
    from transformers import Dinov2Model

    path = layouts["dinov2"]
    spec = _spec("dinov2", path, layers, shared_size=SHARED)
    assert spec.layers == (layers or [-4, -3, -2, -1]) and spec.adapter == "summed_mlp2x_gelu"
    assert (spec.image_size, spec.patch_size, spec.hidden_size) == (SHARED, 14, 32)
    towers, tower = _build(spec, path)
    pixels = _pixels(SHARED)  # not the checkpoint's 70: the position embeddings are interpolated
    features = towers(pixels)["dinov2"]
    assert features.shape == (2, *spec.feature_shape) == (2, len(spec.layers), 16, 32)

    reference = Dinov2Model.from_pretrained(path).eval()
    with torch.no_grad():
        hidden = reference(pixels, output_hidden_states=True).hidden_states
        expected = torch.stack([reference.layernorm(hidden[i])[:, 1:] for i in spec.layers], dim=1)
    assert torch.equal(features, expected)

    last = max(i if i > 0 else 6 + i + 1 for i in spec.layers)  # the last block read, 1-based
    assert len(tower.model.encoder.layer) == last


def test_dinov2_built_without_weights_has_the_loaded_architecture(layouts):
    """`path` None (parameter counting) builds the same modules from the spec's options alone."""
    spec = _spec("dinov2", layouts["dinov2"], shared_size=SHARED)
    _, loaded = _build(spec, layouts["dinov2"])
    built = tower_class("dinov2")(spec, None, loaded.shared)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(built) == shapes(loaded)


# --- depth_anything ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", [None, [1, -3]])
def test_depth_anything_gives_the_backbone_feature_maps_without_cls(layouts, layers):
    from transformers import DepthAnythingForDepthEstimation

    path = layouts["depth_anything"]
    spec = _spec("depth_anything", path, layers, shared_size=SHARED)
    assert spec.layers == (layers or DEPTH_ANYTHING_OUT_INDICES)  # the depth head's own out_indices
    towers, tower = _build(spec, path)
    pixels = _pixels(SHARED)
    features = towers(pixels)["depth_anything"]
    assert features.shape == (2, *spec.feature_shape) == (2, len(spec.layers), 16, 32)

    reference = DepthAnythingForDepthEstimation.from_pretrained(path).eval()
    with torch.no_grad():
        if layers is None:  # exactly what the depth head receives, CLS dropped as its reassemble stage does
            maps = reference.backbone(pixels).feature_maps
            expected = torch.stack([m[:, 1:] for m in maps], dim=1)
        else:
            hidden = reference.backbone(pixels, output_hidden_states=True).hidden_states
            expected = torch.stack(
                [reference.backbone.layernorm(hidden[i])[:, 1:] for i in spec.layers], dim=1
            )
    assert torch.equal(features, expected)

    # the depth neck and head are not kept; the backbone stops at the last block read
    names = [name for name, _ in tower.named_parameters()]
    assert names and not any("neck" in n or "head" in n for n in names)
    assert len(tower.backbone.encoder.layer) == (6 if layers is None else 4)


def test_depth_anything_built_without_weights_has_the_loaded_architecture(layouts):
    spec = _spec("depth_anything", layouts["depth_anything"], shared_size=SHARED)
    _, loaded = _build(spec, layouts["depth_anything"])
    built = tower_class("depth_anything")(spec, None, loaded.shared)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(built) == shapes(loaded)


# --- MoGe-2 through the moge kind --------------------------------------------------------------------------------


def test_moge2_checkpoint_loads_through_the_moge_kind(layouts):
    from moge.model.v2 import MoGeModel

    path = layouts["moge2"]
    blocks = [b + 1 for b in MOGE2_BLOCKS]  # the blocks MoGe-2's own encoder reads, as hidden-state indices
    spec = _spec("moge", path, blocks, shared_size=SHARED)
    assert (spec.hidden_size, spec.options) == (384, {"backbone": "dinov2_vits14"})
    towers, tower = _build(spec, path)
    pixels = _pixels(SHARED)
    features = towers(pixels)["moge"]
    assert features.shape == (2, 4, 16, 384)

    saved = torch.load(path, weights_only=True)["model"]
    assert torch.equal(
        tower.backbone.patch_embed.proj.weight, saved["encoder.backbone.patch_embed.proj.weight"]
    )
    reference = MoGeModel.from_pretrained(str(path)).eval().encoder.backbone
    with torch.no_grad():
        expected = reference.get_intermediate_layers(pixels, n=MOGE2_BLOCKS, norm=True)
    assert torch.equal(features, torch.stack(expected, dim=1))
    assert len(tower.backbone.blocks) == MOGE2_BLOCKS[-1] + 1


# --- compose's --tower KIND=SOURCE[@LAYERS] ----------------------------------------------------------------------


def test_tower_options_give_sensible_specs(layouts):
    def spec(text, shared_size=SHARED):
        kind, source, layers = parse_tower_option(text)
        return _spec(kind, source, layers, shared_size)

    da = spec(f"depth_anything={layouts['depth_anything']}")
    assert (da.layers, da.image_size, da.input) == (DEPTH_ANYTHING_OUT_INDICES, SHARED, "own")
    assert spec(f"depth_anything={layouts['depth_anything']}@-1").layers == [-1]  # one layer, still summed
    assert spec(f"dinov2={layouts['dinov2']}").layers == [-4, -3, -2, -1]
    assert spec(f"dinov2={layouts['dinov2']}@-2,-1").layers == [-2, -1]
    first = spec(f"siglip={layouts['siglip']}", shared_size=None)
    assert (first.layers, first.image_size, first.input, first.adapter) == (-2, 56, "shared", "mlp2x_gelu")
    assert spec(f"siglip={layouts['siglip']}@-3").layers == -3
    for made in (da, first, spec(f"siglip={layouts['siglip']}")):
        made.validate(KINDS)

    with pytest.raises(SgeoError, match="gives one layer"):
        spec(f"siglip={layouts['siglip']}@-2,-1")


@pytest.mark.parametrize(
    "kind, other",
    [("siglip", "dinov2"), ("dinov2", "siglip"), ("depth_anything", "dinov2"), ("dinov2", "depth_anything")],
)
def test_a_checkpoint_of_another_kind_is_a_one_line_error(layouts, kind, other):
    with pytest.raises(SgeoError, match=f"not a {kind} checkpoint.*model_type") as error:
        _spec(kind, layouts[other], shared_size=SHARED)
    assert "\n" not in str(error.value)


def test_a_layer_beyond_the_depth_is_refused(layouts):
    spec = _spec("siglip", layouts["siglip"], -4)  # 3 blocks
    with pytest.raises(ValueError, match="names none of the 3 blocks"):
        _build(spec, layouts["siglip"])


def test_dinov2_with_registers_drops_cls_and_registers(tmp_path):
    """facebook/dinov2-with-registers-*: `Dinov2WithRegistersModel`, four register tokens after CLS."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(26)
    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, image_size=70,
                                       patch_size=14, num_register_tokens=4)  # fmt: skip
    Dinov2WithRegistersModel(config).save_pretrained(tmp_path)
    spec = _spec("dinov2", tmp_path, [-2, -1], shared_size=SHARED)
    towers, _ = _build(spec, tmp_path)
    pixels = _pixels(SHARED)
    features = towers(pixels)["dinov2"]
    assert features.shape == (2, 2, 16, 32)
    reference = Dinov2WithRegistersModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        hidden = reference(pixels, output_hidden_states=True).hidden_states
    assert torch.equal(
        features, torch.stack([reference.layernorm(hidden[i])[:, 5:] for i in (-2, -1)], dim=1)
    )
