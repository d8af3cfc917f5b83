"""Import of reference-format checkpoints: LLaVA-1.5 and the SpatialGeo reference.

LLaVA-1.5 keys are Llama keys plus `model.mm_projector.{0,2}.*`; SpatialGeo adds
`model.moge_mm_projector_list.{0..3}.{0,2}.*`, and its stage-2 release is a LoRA adapter (peft) plus
`non_lora_trainables.bin` over a LLaVA-1.5 base. `.bin` files are read with `weights_only=True`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import SgeoError
from .configuration import SpatialGeoConfig

REFERENCE_ARCHITECTURES = ("LlavaLlamaForCausalLM", "LlavaMoGeLlamaForCausalLM")

_LLAMA_7B = {
    "model_type": "llama",
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}


def reference_7b_config(**paths) -> SpatialGeoConfig:
    """The spatialgeo-7b geometry (no weights needed): CLIP ViT-L/14-336, MoGe ViT-L, Vicuna-7B."""
    return SpatialGeoConfig(
        clip_path=paths.get("clip_path", "openai/clip-vit-large-patch14-336"),
        moge_path=paths.get("moge_path", "Ruicheng/moge-vitl"),
        moge_backbone="dinov2_vitl14",
        text_config=dict(_LLAMA_7B),
        image_token_id=32000,
    )


def is_reference_checkpoint(directory: Path) -> bool:
    config = json.loads((Path(directory) / "config.json").read_text())
    return any(arch in REFERENCE_ARCHITECTURES for arch in config.get("architectures") or []) or (
        "mm_projector_type" in config and config.get("model_type") != "spatialgeo"
    )


def map_reference_key(key: str) -> str | None:
    """A reference checkpoint key -> ours; None for keys we do not keep (vision towers)."""
    key = key.removeprefix("base_model.model.")  # non_lora_trainables.bin prefix
    if "vision_tower" in key or "moge_tower" in key:
        return None
    if key.startswith("model.mm_projector."):
        return "clip_adapter." + key.removeprefix("model.mm_projector.")
    match = re.match(r"model\.moge_mm_projector_list\.(\d+)\.(.*)", key)
    if match:
        return f"moge_adapter.adapters.{match.group(1)}.{match.group(2)}"
    if key.startswith(("model.", "lm_head.")):
        return "language_model." + key
    return None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (safetensors preferred, else pytorch .bin, weights only)."""
    from safetensors.torch import load_file

    files = sorted(directory.glob("*.safetensors"))
    if files:
        return {k: v for f in files if f.name != "adapter_model.safetensors" for k, v in load_file(f).items()}
    files = [f for f in sorted(directory.glob("pytorch_model*.bin"))]
    if not files:
        raise SgeoError(f"{directory} holds no *.safetensors or pytorch_model*.bin weights")
    state = {}
    for f in files:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def _config_from_reference(directory: Path, clip_path: str | None, moge_path: str | None) -> SpatialGeoConfig:
    from transformers import CLIPVisionConfig, LlamaConfig

    raw = json.loads((directory / "config.json").read_text())
    known = set(LlamaConfig().to_dict())
    text_config = {k: v for k, v in raw.items() if k in known and k not in ("architectures", "_name_or_path")}
    text_config["model_type"] = "llama"
    clip_path = clip_path or raw.get("mm_vision_tower")
    clip_vision_config = None
    if clip_path and Path(clip_path).is_dir():
        clip_vision_config = CLIPVisionConfig.from_pretrained(clip_path)
    return SpatialGeoConfig(
        clip_path=clip_path,
        clip_vision_config=clip_vision_config,
        clip_layer=raw.get("mm_vision_select_layer", -2),
        moge_path=moge_path or raw.get("moge_path") or raw.get("mm_moge_tower"),
        moge_backbone=raw.get("moge_backbone") or _backbone_of(moge_path),
        text_config=text_config,
        image_token_id=raw.get("vocab_size", 32000),
        adapter_type=raw.get("mm_projector_type", "mlp2x_gelu"),
    )


def _backbone_of(moge_path: str | None) -> str:
    """The DINOv2 backbone a MoGe checkpoint names (ViT-L, the reference, when there is no file to read)."""
    if moge_path and Path(moge_path).is_file():
        config = torch.load(moge_path, map_location="cpu", weights_only=True, mmap=True)["model_config"]
        encoder = config["encoder"]
        return encoder["backbone"] if isinstance(encoder, dict) else encoder
    return "dinov2_vitl14"


def load_reference(
    directory: str | Path,
    *,
    clip_path: str | None = None,
    moge_path: str | None = None,
    model_base: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
):
    """A LLaVA-1.5 or SpatialGeo reference checkpoint -> (SpatialGeoForCausalLM, SpatialGeoProcessor).

    A LoRA release (adapter_config.json + non_lora_trainables.bin) needs `model_base`, the LLaVA-1.5 it was
    trained from. A plain LLaVA-1.5 has no MoGe adapter: it starts freshly initialised (seeded), as the
    reference's stage 1 does.
    """
    from transformers import AutoTokenizer

    from .modeling import SpatialGeoForCausalLM
    from .processing import SpatialGeoProcessor, build_image_processor

    directory = Path(directory)
    is_lora = (directory / "adapter_config.json").exists()
    if is_lora and model_base is None:
        raise SgeoError(
            f"{directory} is a LoRA checkpoint; give the LLaVA-1.5 base it was trained from (--model-base)"
        )
    weights_dir = Path(model_base) if is_lora else directory
    config = _config_from_reference(weights_dir if is_lora else directory, clip_path, moge_path)

    state = {}
    for key, value in read_weights(weights_dir).items():
        mapped = map_reference_key(key)
        if mapped is not None:
            state[mapped] = value
    if is_lora:
        non_lora = directory / "non_lora_trainables.bin"
        if not non_lora.exists():
            raise SgeoError(f"{directory} is a LoRA checkpoint without non_lora_trainables.bin")
        for key, value in torch.load(non_lora, map_location="cpu", weights_only=True).items():
            mapped = map_reference_key(key)
            if mapped is not None:
                state[mapped] = value

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype or torch.float32)
    try:
        model = SpatialGeoForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches: another model size than the config says
        detail = next(
            (line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error)
        )
        raise SgeoError(f"{directory} does not fit its config.json: {detail}") from None
    missing = [k for k in result.missing_keys if not k.startswith("moge_adapter.")]
    if missing or result.unexpected_keys:
        raise SgeoError(
            f"{directory} does not match the SpatialGeo layout: missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}; is it a LLaVA-1.5 / SpatialGeo checkpoint?"
        )
    if is_lora:
        from peft import PeftModel

        model.language_model = PeftModel.from_pretrained(model.language_model, directory).merge_and_unload()

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or weights_dir, use_fast=True)
    processor = SpatialGeoProcessor(
        build_image_processor(config.image_size), tokenizer, config.num_image_tokens
    )
    model.config.image_token_id = processor.image_token_id
    return model, processor
