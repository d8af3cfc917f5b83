"""`SpatialGeoForCausalLM`: LLaVA-1.5 with more vision towers (SpatialGeo: a second, geometric one).

The model owns one adapter per tower (`<tower>_adapter`: SpatialGeo's `clip_adapter` and `moge_adapter`, the
keys its checkpoints have always had) and the LLM (what a checkpoint holds). The frozen towers are attached
with `load_towers()` only where pixels must be encoded; training from cached features never constructs them.
`encode_images` is the one road from pixels to the arrays the feature stores hold ({tower: features});
`forward` and `generate` take either pixels or those features, and both roads meet in `embed_inputs`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from .adapters import build_tower_adapter
from .configuration import SpatialGeoConfig
from .fusion import fuse, keep_branches
from .towers.stack import VisionTowers

ADAPTER_SUFFIX = "_adapter"  # tower `moge` -> module `moge_adapter` (its checkpoint keys' prefix)


def adapter_module_name(tower: str) -> str:
    return tower + ADAPTER_SUFFIX


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
        for spec in config.towers:
            self.add_module(adapter_module_name(spec.name), build_tower_adapter(spec, config.hidden_size))
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self.towers: VisionTowers | None = None
        self.post_init()

    def adapters(self) -> dict[str, nn.Module]:
        """{tower name: its adapter}, in fusion order."""
        return {name: getattr(self, adapter_module_name(name)) for name in self.config.tower_names}

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear) and any(module is m for m in self._adapter_linears()):
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            module.weight.data.normal_(0.0, std)
            if module.bias is not None:
                module.bias.data.zero_()

    def _adapter_linears(self):
        names = self.config.tower_names
        if not all(hasattr(self, adapter_module_name(n)) for n in names):
            return  # post_init during construction, before every adapter exists
        for adapter in self.adapters().values():
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
        for adapter in model.adapters().values():
            adapter.to(parameter.dtype)
        return model

    def init_adapters(self, seed: int, device="cpu") -> None:
        """Every adapter freshly initialised on `device` (seeded; the global RNG is left as it was), whether
        they were materialised or built on the meta device."""
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            for adapter in self.adapters().values():
                adapter.to_empty(device=device)
            for linear in self._adapter_linears():
                self._init_weights(linear)
        finally:
            torch.random.set_rng_state(generator_state)

    # -- towers --------------------------------------------------------------------------------------
    def load_towers(self, paths: dict[str, str] | None = None) -> VisionTowers:
        """Attach the frozen towers, loaded through their own loaders from the given paths ({tower: path}), or
        from where the config names them (a path relative to the model directory, or a hub id found locally)."""
        from .hub import locate_tower

        base = getattr(self.config, "_name_or_path", "") or None
        paths = dict(paths or {})
        for spec in self.config.towers:
            if not paths.get(spec.name):
                paths[spec.name] = locate_tower(spec.source, spec.kind, base, "the model").path
        towers = VisionTowers(self.config.towers, paths)
        towers.to(device=self.device)
        self.towers = towers
        return towers

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> dict[str, torch.Tensor]:
        """pixels [B, 3, S, S] -> {tower: [B, T, D] or [B, L, T, D]}: exactly what the feature stores hold."""
        if self.towers is None:
            raise RuntimeError("the vision towers are not loaded; call model.load_towers() to encode pixels")
        return self.towers.encode_images(pixel_values)

    # -- visual tokens -------------------------------------------------------------------------------
    def get_image_features(self, image_features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each tower's features -> fused visual tokens [B, sum T, H] in the LLM's dtype."""
        missing = [name for name in self.config.tower_names if name not in image_features]
        if missing:
            raise ValueError(
                f"image features lack towers {missing}; the model reads {self.config.tower_names}"
            )
        dtype = self.adapter_dtype
        tokens = {
            name: adapter(image_features[name].to(device=self.device, dtype=dtype))  # [B, T, H]
            for name, adapter in self.adapters().items()
        }
        tokens = keep_branches(self.config.visual_branches, tokens)
        return fuse(self.config.fusion, list(tokens.values()))  # [B, sum T, H]

    @property
    def adapter_dtype(self) -> torch.dtype:
        return next(next(iter(self.adapters().values())).parameters()).dtype

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_features: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the fused visual tokens scattered over the image-token positions."""
        if pixel_values is not None and image_features is not None:
            raise ValueError("pass either pixel_values (online) or image_features (cached), not both")
        image_mask = input_ids == self.config.image_token_id  # [B, N]
        # The image-token id may lie outside the LLM's vocabulary (LLaVA's 32000 rows): look up a valid id.
        inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))  # [B, N, H]
        if pixel_values is not None:
            image_features = self.encode_images(pixel_values)
        num_tokens = int(image_mask.sum())
        if image_features is None:
            if num_tokens:
                raise ValueError(f"the input has {num_tokens} image tokens but no image was given")
            return inputs_embeds
        image_embeds = self.get_image_features(image_features)  # [I, sum T, H]
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
        image_features: dict[str, torch.Tensor] | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.embed_inputs(input_ids, pixel_values, image_features)
        return self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
        )

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: dict[str, torch.Tensor] | None = None,
        **generate_kwargs,
    ) -> torch.Tensor:
        """Generate from the merged embeddings; returns only the new tokens (as LLaVA's generate does)."""
        import warnings

        inputs_embeds = self.embed_inputs(input_ids, pixel_values, image_features)
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
        with absolute_tower_paths(self.config):
            towers, self.towers = self.towers, None
            try:
                return super().save_pretrained(save_directory, *args, **kwargs)
            finally:
                self.towers = towers


@contextlib.contextmanager
def absolute_tower_paths(config: SpatialGeoConfig):
    """While inside: every tower source relative to the model directory made absolute (hub ids and absolute
    paths kept), so a config saved elsewhere still finds its towers; restored on exit."""
    saved = [dict(t) for t in config.vision_towers]
    base = getattr(config, "_name_or_path", "") or ""
    for tower in config.vision_towers:
        path = tower["source"]
        if path and not Path(path).is_absolute() and base and (Path(base) / path).exists():
            tower["source"] = str((Path(base) / path).resolve())
    try:
        yield config
    finally:
        config.vision_towers = saved


AutoModelForCausalLM.register(SpatialGeoConfig, SpatialGeoForCausalLM, exist_ok=True)
