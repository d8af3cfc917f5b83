"""`SpatialGeoConfig`: the typed, self-validating description of a SpatialGeo model.

It nests the text config of the LLM and describes both frozen vision towers (where their weights live and
which layers are read), the adapters and the fusion. Tower weights are not part of a SpatialGeo checkpoint:
like LLaVA's `mm_vision_tower`, the config names them and the towers load through their own loaders.
"""

from __future__ import annotations

from transformers import AutoConfig, CLIPVisionConfig, PretrainedConfig

MOGE_INPUTS = (
    "clip",
    "moge",
)  # which normalisation MoGe reads: CLIP's (reference) or ImageNet's (MoGe's own)

# (width, depth) of the DINOv2 backbones that MoGe checkpoints name (`dinov2_vitl14`, ...).
DINOV2_GEOMETRY = {
    "dinov2_vits14": (384, 12),
    "dinov2_vitb14": (768, 12),
    "dinov2_vitl14": (1024, 24),
    "dinov2_vitg14": (1536, 40),
}
DINOV2_WIDTHS = {name: width for name, (width, _) in DINOV2_GEOMETRY.items()}
ADAPTERS = ("clip", "moge")  # the adapters a model trains: `clip_adapter`, `moge_adapter`


class SpatialGeoConfig(PretrainedConfig):
    r"""Configuration of [`SpatialGeoForCausalLM`].

    Args:
        clip_backend: `"hf"` (transformers `CLIPVisionModel`) or `"open_clip"`.
        clip_path: HF directory / hub id (hf) or checkpoint file (open_clip) of the CLIP tower.
        clip_vision_config: `CLIPVisionConfig` (or dict) of the hf tower; for open_clip, geometry is read from
            `clip_model_name` and `clip_hidden_size` / `image_size` / `patch_size`.
        clip_model_name: open_clip architecture name (open_clip backend only).
        clip_layer: which hidden state the CLIP tower returns (LLaVA-1.5: -2, the penultimate layer).
        moge_path: MoGe checkpoint (`{"model_config", "model"}` .pt file).
        moge_backbone: the DINOv2 backbone the MoGe checkpoint names, e.g. `dinov2_vitl14`.
        moge_layers: how many of the last backbone blocks are read (`get_intermediate_layers(x, n=...)`).
        moge_input: `"clip"` feeds MoGe the CLIP-preprocessed pixels (reference); `"moge"` renormalises them
            with ImageNet statistics first.
        text_config: config of the LLM (any `AutoModelForCausalLM`).
        image_token_id: id of the `<image>` token; the processor expands each image into
            `num_image_tokens` copies of it and the model scatters the fused visual tokens there.
        adapter_type: `mlp2x_gelu` (LLaVA-1.5) or `linear`.
        fusion: `interleave` (c0, m0, c1, m1, ...: 2T tokens) or `concat` (all CLIP then all MoGe tokens).
        visual_branches: `both` (SpatialGeo), or `clip` / `moge`: an ablation whose other branch's tokens are
            zeros (same sequence, no information), set when such a model is trained.
        llm_path: a composed model's LLM (`sgeo compose`): its directory (absolute, or relative to the model
            directory) or a hub id found in the HF cache. Its weights load from there and are not in the model
            directory, which holds the adapters alone (`adapters.safetensors`). None: the LLM is in the
            model's own weights.
        trained_adapters: which adapters (`clip`, `moge`) have been trained. None: a LLaVA-1.5 start, whose CLIP
            adapter is LLaVA's trained one. Stage 1 trains the MoGe adapter and every adapter not yet trained.
    """

    model_type = "spatialgeo"
    sub_configs = {"text_config": AutoConfig, "clip_vision_config": CLIPVisionConfig}

    def __init__(
        self,
        clip_backend: str = "hf",
        clip_path: str | None = None,
        clip_vision_config: dict | CLIPVisionConfig | None = None,
        clip_model_name: str | None = None,
        clip_hidden_size: int | None = None,
        clip_layer: int = -2,
        image_size: int | None = None,
        patch_size: int | None = None,
        moge_path: str | None = None,
        moge_backbone: str = "dinov2_vitl14",
        moge_layers: int = 4,
        moge_input: str = "clip",
        text_config: dict | PretrainedConfig | None = None,
        image_token_id: int = 32000,
        adapter_type: str = "mlp2x_gelu",
        fusion: str = "interleave",
        visual_branches: str = "both",
        llm_path: str | None = None,
        trained_adapters: list[str] | None = None,
        **kwargs,
    ):
        if isinstance(clip_vision_config, dict):
            clip_vision_config = CLIPVisionConfig(**clip_vision_config)
        if clip_backend == "hf" and clip_vision_config is None:
            clip_vision_config = CLIPVisionConfig(
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
                image_size=336,
                patch_size=14,
                projection_dim=768,
            )  # openai/clip-vit-large-patch14-336
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            text_config = AutoConfig.for_model(text_config.pop("model_type", "llama"), **text_config)
        if text_config is None:
            text_config = AutoConfig.for_model("llama")

        self.clip_backend = clip_backend
        self.clip_path = clip_path
        self.clip_vision_config = clip_vision_config
        self.clip_model_name = clip_model_name
        self.clip_layer = clip_layer
        if clip_backend == "hf":
            clip_hidden_size = clip_hidden_size or clip_vision_config.hidden_size
            image_size = image_size or clip_vision_config.image_size
            patch_size = patch_size or clip_vision_config.patch_size
        self.clip_hidden_size = clip_hidden_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.moge_path = moge_path
        self.moge_backbone = moge_backbone
        self.moge_layers = moge_layers
        self.moge_input = moge_input
        self.text_config = text_config
        self.image_token_id = image_token_id
        self.adapter_type = adapter_type
        self.fusion = fusion
        self.visual_branches = visual_branches
        self.llm_path = llm_path
        self.trained_adapters = None if trained_adapters is None else sorted(set(trained_adapters))
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        def check(value, allowed, name):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {list(allowed)}")

        # the registries are the one list of each kind: registering a new one makes it valid here
        from .adapters import adapter_types
        from .fusion import FUSIONS, VISUAL_BRANCHES
        from .towers import clip_backends

        check(self.clip_backend, clip_backends(), "clip_backend")
        check(self.adapter_type, adapter_types(), "adapter_type")
        check(self.fusion, sorted(FUSIONS), "fusion")
        check(self.visual_branches, VISUAL_BRANCHES, "visual_branches")
        check(self.moge_input, MOGE_INPUTS, "moge_input")
        check(self.moge_backbone, DINOV2_WIDTHS, "moge_backbone")
        if self.trained_adapters is not None and not set(self.trained_adapters) <= set(ADAPTERS):
            raise ValueError(
                f"trained_adapters={self.trained_adapters!r} names adapters other than {list(ADAPTERS)}"
            )
        if self.moge_layers < 1:
            raise ValueError(f"moge_layers must be >= 1, got {self.moge_layers}")
        if not (self.clip_hidden_size and self.image_size and self.patch_size):
            raise ValueError(
                "clip_hidden_size, image_size and patch_size are required for the open_clip backend"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        # MoGe's DINOv2 always has patch 14: both towers must see the same grid for one-to-one interleaving.
        if self.fusion == "interleave" and self.patch_size != 14:
            raise ValueError(
                f"interleave fusion needs CLIP patch size 14 (as DINOv2's), got {self.patch_size}"
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        # Remember where the config came from: relative tower paths are relative to that directory.
        config = (
            loaded[0] if isinstance(loaded, tuple) else loaded
        )  # (config, unused) with return_unused_kwargs
        config._name_or_path = str(pretrained_model_name_or_path)
        return loaded

    @property
    def num_patches(self) -> int:
        """T: visual tokens per tower per image."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_image_tokens(self) -> int:
        """Tokens one image occupies in the LLM sequence (2T for both fusions)."""
        return 2 * self.num_patches

    @property
    def moge_hidden_size(self) -> int:
        return DINOV2_WIDTHS[self.moge_backbone]

    @property
    def clip_feature_shape(self) -> tuple[int, int]:
        """(T, Dc): what the CLIP tower gives per image, and the feature store holds."""
        return (self.num_patches, self.clip_hidden_size)

    @property
    def moge_feature_shape(self) -> tuple[int, int, int]:
        """(L, T, Dm): what the MoGe tower gives per image (its last L blocks), and the store holds."""
        return (self.moge_layers, self.num_patches, self.moge_hidden_size)

    def adapter_trained(self, adapter: str) -> bool:
        """Whether `adapter` has been trained (a LLaVA-1.5 start's CLIP adapter has, its MoGe adapter not)."""
        if self.trained_adapters is None:
            return adapter == "clip"
        return adapter in self.trained_adapters

    @property
    def hidden_size(self) -> int:
        return self.text_config.hidden_size


# Registered so that transformers' Auto* classes (and tokenizer loading) recognise our directories.
AutoConfig.register(SpatialGeoConfig.model_type, SpatialGeoConfig, exist_ok=True)
