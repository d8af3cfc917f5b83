"""`SpatialGeoConfig`: the typed, self-validating description of a SpatialGeo model.

It nests the text config of the LLM and lists the frozen vision towers (`TowerSpec`s: kind, where the weights
live, which layers are read, the adapter), in fusion order, with the fusion. It validates against names (tower
kinds, adapters, fusions), never against modeling code, as transformers' configurations do.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

from .tower_spec import SUMMED, TowerSpec, last_layers
from .towers.moge_checkpoint import DINOV2_GEOMETRY, DINOV2_PATCH
from .towers.registry import KINDS

FUSIONS = ("interleave", "concat")  # implemented in fusion.py (a test keeps the two lists equal)
ALL_BRANCHES = (
    "both"  # visual_branches: every tower's tokens reach the LLM (else one tower's name: an ablation)
)
# openai/clip-vit-large-patch14-336: LLaVA-1.5's CLIP, the default model's first tower
CLIP_L14_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=336, patch_size=14, projection_dim=768)  # fmt: skip


class SpatialGeoConfig(PretrainedConfig):
    r"""Configuration of [`SpatialGeoForCausalLM`].

    Args:
        vision_towers: the frozen towers in fusion order, each a `TowerSpec` as a dict (kind, source, layers,
            input, adapter, sizes; see `tower_spec.py`). Tower weights are not part of a SpatialGeo checkpoint:
            like LLaVA's `mm_vision_tower`, the config names them and each loads through its own loader.
            None: SpatialGeo's two, from the fields below (which is also how configs written before towers
            were a list load).
        text_config: config of the LLM (any `AutoModelForCausalLM`).
        image_token_id: id of the `<image>` token; the processor expands each image into `num_image_tokens`
            copies of it and the model scatters the fused visual tokens there.
        fusion: `interleave` (one token of each tower in turn: c0, m0, c1, m1, ...; the towers need equal token
            counts) or `concat` (all of the first tower's tokens, then the next's).
        visual_branches: `both` (every tower), or one tower's name: an ablation whose other towers' tokens are
            zeros (same sequence, no information), set when such a model is trained.
        llm_path: a composed model's LLM (`sgeo compose`): its directory (absolute, or relative to the model
            directory) or a hub id found in the HF cache. None: the LLM is in the model's own weights.
        trained_adapters: which towers' adapters have been trained. None: a LLaVA-1.5 start, whose `clip`
            adapter is LLaVA's trained one. Stage 1 trains the geometry adapters and every adapter not yet trained.

    The SpatialGeo fields (used only when `vision_towers` is None): `clip_backend` (`hf` / `open_clip`),
    `clip_path`, `clip_vision_config`, `clip_model_name`, `clip_hidden_size`, `clip_layer`, `image_size`,
    `patch_size`, `moge_path`, `moge_backbone`, `moge_layers` (the last n blocks), `moge_normalisation` (the
    statistics MoGe's pixels are normalised with: `clip`, CLIP's preprocessing as the reference; `moge`, its
    own ImageNet ones; configs written before it had this name call it `moge_input`) and `adapter_type`.
    """

    model_type = "spatialgeo"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        vision_towers: list[dict] | None = None,
        text_config: dict | PretrainedConfig | None = None,
        image_token_id: int = 32000,
        fusion: str = "interleave",
        visual_branches: str = ALL_BRANCHES,
        llm_path: str | None = None,
        trained_adapters: list[str] | None = None,
        **kwargs,
    ):
        spatialgeo = {k: kwargs.pop(k) for k in list(kwargs) if k in SPATIALGEO_FIELDS}
        for old, new in FORMER_FIELD_NAMES.items():
            if old in kwargs:
                spatialgeo.setdefault(new, kwargs.pop(old))
        if vision_towers is None:
            vision_towers = spatialgeo_towers(**spatialgeo)
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            text_config = AutoConfig.for_model(text_config.pop("model_type", "llama"), **text_config)
        if text_config is None:
            text_config = AutoConfig.for_model("llama")
        self.vision_towers = [
            (t if isinstance(t, TowerSpec) else TowerSpec.from_dict(t)).to_dict() for t in vision_towers
        ]
        self.text_config = text_config
        self.image_token_id = image_token_id
        self.fusion = fusion
        self.visual_branches = visual_branches
        self.llm_path = llm_path
        self.trained_adapters = None if trained_adapters is None else sorted(set(trained_adapters))
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        towers = self.towers
        if not towers:
            raise ValueError("vision_towers is empty; a model needs at least one tower")
        for tower in towers:
            tower.validate(KINDS)
        names = [t.name for t in towers]
        if len(set(names)) != len(names):
            raise ValueError(f"tower names {names} repeat; give each tower its own name")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion={self.fusion!r} is not one of {list(FUSIONS)}")
        if self.visual_branches not in (ALL_BRANCHES, *names):
            raise ValueError(
                f"visual_branches={self.visual_branches!r} is not one of {[ALL_BRANCHES, *names]}"
            )
        if self.trained_adapters is not None and not set(self.trained_adapters) <= set(names):
            raise ValueError(f"trained_adapters={self.trained_adapters!r} names towers other than {names}")
        size = towers[0].image_size
        for tower in towers[1:]:
            if tower.input == "shared" and tower.image_size != size:
                raise ValueError(
                    f"tower {tower.name!r} reads the shared pixels ({size} px) but has image_size "
                    f"{tower.image_size}; set its input to 'own' (resized to its size) or its size to {size}"
                )
        if self.fusion == "interleave" and len({t.num_tokens for t in towers}) > 1:
            counts = {t.name: t.num_tokens for t in towers}
            raise ValueError(
                f"interleave fusion needs equal token counts per tower, got {counts}; use fusion 'concat' or "
                "image sizes that give the same grid"
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        # Remember where the config came from: relative tower paths are relative to that directory.
        config = (
            loaded[0] if isinstance(loaded, tuple) else loaded
        )  # (config, unused) with return_unused_kwargs
        config.name_or_path = pretrained_model_name_or_path  # (the setter keeps it a str)
        return loaded

    @property
    def towers(self) -> list[TowerSpec]:
        """The towers in fusion order (parsed from `vision_towers` each time: edits to the dicts show)."""
        return [TowerSpec.from_dict(t) for t in self.vision_towers]

    @property
    def tower_names(self) -> list[str]:
        return [t["name"] for t in self.vision_towers]

    def tower(self, name: str) -> TowerSpec:
        for spec in self.towers:
            if spec.name == name:
                return spec
        raise KeyError(f"the model has no tower {name!r}; its towers: {self.tower_names}")

    def set_tower_source(self, name: str, source: str | None) -> None:
        for tower in self.vision_towers:
            if tower["name"] == name:
                tower["source"] = source
                return
        raise KeyError(f"the model has no tower {name!r}; its towers: {self.tower_names}")

    @property
    def image_size(self) -> int:
        """The side of the shared pixels (the first tower's input size): what the processor makes."""
        return self.towers[0].image_size

    @property
    def num_image_tokens(self) -> int:
        """Tokens one image occupies in the LLM sequence: every tower's tokens."""
        return sum(t.num_tokens for t in self.towers)

    @property
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """What each tower gives per image, and its feature store holds."""
        return {t.name: t.feature_shape for t in self.towers}

    def adapter_trained(self, name: str) -> bool:
        """Whether tower `name`'s adapter has been trained (a LLaVA-1.5 start's `clip` adapter has)."""
        if self.trained_adapters is None:
            return name == "clip"
        return name in self.trained_adapters

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size


SPATIALGEO_FIELDS = (
    "clip_backend", "clip_path", "clip_vision_config", "clip_model_name", "clip_hidden_size", "clip_layer",
    "image_size", "patch_size", "moge_path", "moge_backbone", "moge_layers", "moge_normalisation",
    "adapter_type",
)  # fmt: skip
# Fields of configs written before they had their present names: read as the new ones.
FORMER_FIELD_NAMES = {"moge_input": "moge_normalisation"}


def spatialgeo_towers(
    clip_backend: str = "hf",
    clip_path: str | None = None,
    clip_vision_config=None,
    clip_model_name: str | None = None,
    clip_hidden_size: int | None = None,
    clip_layer: int = -2,
    image_size: int | None = None,
    patch_size: int | None = None,
    moge_path: str | None = None,
    moge_backbone: str = "dinov2_vitl14",
    moge_layers: int = 4,
    moge_normalisation: str = "clip",
    adapter_type: str = "mlp2x_gelu",
) -> list[dict]:
    """SpatialGeo's towers (CLIP, then MoGe's DINOv2) from the fields its configs have always had."""
    if clip_backend not in ("hf", "open_clip"):
        raise ValueError(f"clip_backend={clip_backend!r} is not one of ['hf', 'open_clip']")
    if moge_normalisation not in ("clip", "moge"):
        raise ValueError(f"moge_normalisation={moge_normalisation!r} is not one of ['clip', 'moge']")
    if moge_backbone not in DINOV2_GEOMETRY:
        raise ValueError(f"moge_backbone={moge_backbone!r} is not one of {list(DINOV2_GEOMETRY)}")
    if moge_layers < 1:
        raise ValueError(f"moge_layers must be >= 1, got {moge_layers}")
    options: dict = {}
    if clip_backend == "hf":
        if clip_vision_config is None:
            clip_vision_config = dict(CLIP_L14_336)
        if not isinstance(clip_vision_config, dict):
            clip_vision_config = clip_vision_config.to_dict()
        from transformers import CLIPVisionConfig

        vision = CLIPVisionConfig(**clip_vision_config)
        clip_hidden_size = clip_hidden_size or vision.hidden_size
        image_size, patch_size = image_size or vision.image_size, patch_size or vision.patch_size
        from .towers.clip import vision_config_dict

        options["vision_config"] = vision_config_dict(vision)
    else:
        options["model_name"] = clip_model_name
    if not (clip_hidden_size and image_size and patch_size):
        raise ValueError("clip_hidden_size, image_size and patch_size are required for the open_clip backend")
    clip = TowerSpec("clip", "clip" if clip_backend == "hf" else "open_clip", clip_path, clip_layer,
                     clip_hidden_size, patch_size, image_size, adapter=adapter_type, options=options)  # fmt: skip
    # MoGe reads the same pixels as CLIP (patch 14 on CLIP's grid: one MoGe token per CLIP token)
    moge = TowerSpec("moge", "moge", moge_path, last_layers(moge_layers), DINOV2_GEOMETRY[moge_backbone][0],
                     DINOV2_PATCH, image_size, input="own" if moge_normalisation == "moge" else "shared",
                     adapter=SUMMED + adapter_type, options={"backbone": moge_backbone})  # fmt: skip
    return [clip.to_dict(), moge.to_dict()]


# Registered so that transformers' Auto* classes (and tokenizer loading) recognise our directories.
AutoConfig.register(SpatialGeoConfig.model_type, SpatialGeoConfig, exist_ok=True)
