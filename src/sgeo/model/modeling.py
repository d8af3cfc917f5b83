"""`SpatialGeoForCausalLM`: LLaVA-1.5 with a second, geometric vision tower.

The model owns the two adapters and the LLM (what a checkpoint holds). The frozen towers are attached with
`load_towers()` only where pixels must be encoded; training from cached features never constructs them.
`encode_images` is the one road from pixels to the arrays a feature store holds; `forward` and `generate`
take either pixels or those arrays, and both roads meet in `embed_inputs`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from .adapters import HierarchicalAdapter, build_adapter
from .configuration import SpatialGeoConfig
from .fusion import fuse, keep_branches
from .towers import VisionTowers


class SpatialGeoForCausalLM(PreTrainedModel):
    config_class = SpatialGeoConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flash_attn_2 = True

    def __init__(self, config: SpatialGeoConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.clip_adapter = build_adapter(config.adapter_type, config.clip_hidden_size, hidden)
        self.moge_adapter = HierarchicalAdapter(
            config.adapter_type, config.moge_layers, config.moge_hidden_size, hidden
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.towers: VisionTowers | None = None
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and any(module is m for m in self._adapter_linears()):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()

    def _adapter_linears(self):
        for adapter in (self.clip_adapter, self.moge_adapter) if hasattr(self, "moge_adapter") else ():
            yield from (m for m in adapter.modules() if isinstance(m, nn.Linear))

    @classmethod
    def from_language_model(cls, config: SpatialGeoConfig, language_model: nn.Module, seed: int = 0):
        """A model around an already loaded LLM (e.g. from a LLaVA checkpoint), adapters freshly initialised
        (seeded). The LLM is never materialised twice: the wrapper is built on the meta device first."""
        from accelerate import init_empty_weights

        with init_empty_weights():
            model = cls(config)
        model.language_model = language_model
        parameter = next(language_model.parameters())
        model.init_adapters(seed, parameter.device)
        model.clip_adapter.to(parameter.dtype)
        model.moge_adapter.to(parameter.dtype)
        return model

    def init_adapters(self, seed: int, device="cpu") -> None:
        """Both adapters freshly initialised on `device` (seeded; the global RNG is left as it was), whether
        they were materialised or built on the meta device."""
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            for adapter in (self.clip_adapter, self.moge_adapter):
                adapter.to_empty(device=device)
            for linear in self._adapter_linears():
                self._init_weights(linear)
        finally:
            torch.random.set_rng_state(generator_state)

    # -- towers --------------------------------------------------------------------------------------
    def load_towers(self, clip_path: str | None = None, moge_path: str | None = None) -> VisionTowers:
        """Attach the frozen towers, loaded through their own loaders from the given paths, or from where the
        config names them (a path relative to the model directory, or a hub id found locally)."""
        from .hub import locate_tower

        base = getattr(self.config, "_name_or_path", "") or None
        clip_path = clip_path or locate_tower(self.config.clip_path, "clip", base, "the model").path
        moge_path = moge_path or locate_tower(self.config.moge_path, "moge", base, "the model").path
        towers = VisionTowers(self.config, clip_path, moge_path)
        towers.to(device=self.device)
        self.towers = towers
        return towers

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pixels [B, 3, S, S] -> (clip [B, T, Dc], moge [B, L, T, Dm]): exactly what a feature store holds."""
        if self.towers is None:
            raise RuntimeError("the vision towers are not loaded; call model.load_towers() to encode pixels")
        return self.towers.encode_images(pixel_values)

    # -- visual tokens -------------------------------------------------------------------------------
    def get_image_features(self, clip_features: torch.Tensor, moge_features: torch.Tensor) -> torch.Tensor:
        """Encoder outputs -> fused visual tokens [B, 2T, H] in the LLM's dtype."""
        dtype = self.clip_adapter_dtype
        clip_tokens = self.clip_adapter(clip_features.to(device=self.device, dtype=dtype))  # [B, T, H]
        moge_tokens = self.moge_adapter(moge_features.to(device=self.device, dtype=dtype))  # [B, T, H]
        clip_tokens, moge_tokens = keep_branches(self.config.visual_branches, clip_tokens, moge_tokens)
        return fuse(self.config.fusion, clip_tokens, moge_tokens)  # [B, 2T, H]

    @property
    def clip_adapter_dtype(self) -> torch.dtype:
        return next(self.clip_adapter.parameters()).dtype

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        clip_features: torch.Tensor | None = None,
        moge_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the fused visual tokens scattered over the image-token positions."""
        has_features = clip_features is not None or moge_features is not None
        if pixel_values is not None and has_features:
            raise ValueError(
                "pass either pixel_values (online) or clip_features and moge_features (cached), not both"
            )
        if has_features and (clip_features is None or moge_features is None):
            raise ValueError("cached features need both clip_features and moge_features")
        image_mask = input_ids == self.config.image_token_id  # [B, N]
        # The image-token id may lie outside the LLM's vocabulary (LLaVA's 32000 rows): look up a valid id.
        inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))  # [B, N, H]
        if pixel_values is not None:
            clip_features, moge_features = self.encode_images(pixel_values)
        num_tokens = int(image_mask.sum())
        if clip_features is None:
            if num_tokens:
                raise ValueError(f"the input has {num_tokens} image tokens but no image was given")
            return inputs_embeds
        image_embeds = self.get_image_features(clip_features, moge_features)  # [I, 2T, H]
        num_features = image_embeds.shape[0] * image_embeds.shape[1]
        if num_tokens != num_features:
            raise ValueError(
                f"Image features and image tokens do not match: tokens: {num_tokens}, features: {num_features}"
            )
        mask = image_mask.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, image_embeds.to(inputs_embeds.dtype))

    # -- forward / generate --------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        clip_features: torch.Tensor | None = None,
        moge_features: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, clip_features, moge_features)
        return self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        clip_features: torch.Tensor | None = None,
        moge_features: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Generate from the merged embeddings; returns only the new tokens (as LLaVA's generate does)."""
        import warnings

        inputs_embeds = self.embed_inputs(input_ids, pixel_values, clip_features, moge_features)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        with warnings.catch_warnings():
            # an LLM's generation_config.json may ask for a repetition penalty (Qwen2.5's 1.05): from embeddings
            # it applies to the answer's tokens, the prompt's image positions having no token id to penalise
            warnings.filterwarnings("ignore", message="Passing `repetition_penalty` with `inputs_embeds`")
            return self.language_model.generate(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
            )

    # -- persistence ---------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *args, **kwargs):
        """HF save of adapters + LLM. Tower weights stay in their own checkpoints (named by the config), with
        paths made absolute so the saved model finds its towers from anywhere."""
        config, towers = self.config, self.towers
        saved = config.clip_path, config.moge_path
        self.towers = None
        config.clip_path = _absolute_tower_path(config, config.clip_path)
        config.moge_path = _absolute_tower_path(config, config.moge_path)
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            config.clip_path, config.moge_path = saved
            self.towers = towers


def _absolute_tower_path(config: SpatialGeoConfig, path: str | None) -> str | None:
    """A tower path relative to the model directory -> absolute; hub ids and absolute paths are kept."""
    base = getattr(config, "_name_or_path", "") or ""
    if path is None or Path(path).is_absolute() or not base or not (Path(base) / path).exists():
        return path
    return str((Path(base) / path).resolve())


AutoModelForCausalLM.register(SpatialGeoConfig, SpatialGeoForCausalLM, exist_ok=True)
