"""Reference-format checkpoints: LLaVA-1.5 and the SpatialGeo releases, read as they are published.

LLaVA-1.5 keys are Llama keys plus `model.mm_projector.{0,2}.*`; SpatialGeo adds
`model.moge_mm_projector_list.{0..3}.{0,2}.*`. Its stage-2 release is a peft LoRA adapter plus
`non_lora_trainables.bin` (the adapters, prefixed `base_model.model.`) over LLaVA-1.5; its stage-1 release is
`moge_mm_projector_list.bin` over LLaVA-1.5. The LLM loads through transformers' own loader (sharded, any
dtype); the adapters are read from the files that hold them only. `.bin` files load with `weights_only=True`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import SgeoError, one_line
from .configuration import SpatialGeoConfig
from .hub import Located

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
_NOT_TEXT_CONFIG = {
    "architectures",
    "_name_or_path",
    "transformers_version",
    "model_type",
    "dtype",
    "torch_dtype",
}
STAGE1_WEIGHTS = "moge_mm_projector_list.bin"  # what the SpatialGeo stage-1 script saves
NON_LORA_WEIGHTS = "non_lora_trainables.bin"  # what LLaVA's LoRA training saves beside the adapter
# LLaVA config values of `image_aspect_ratio` -> sgeo's aspect modes (`square` is CLIP's resize + centre crop)
LLAVA_ASPECT = {"pad": "pad", "square": "crop", None: "crop"}
ADAPTER_PREFIXES = ("model.mm_projector.", "model.moge_mm_projector_list.")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def reference_7b_config() -> SpatialGeoConfig:
    """The spatialgeo-7b geometry without any file: CLIP ViT-L/14-336, MoGe ViT-L, Vicuna-7B."""
    return SpatialGeoConfig(
        clip_path="openai/clip-vit-large-patch14-336",
        moge_path="Ruicheng/moge-vitl",
        moge_backbone="dinov2_vitl14",
        text_config=dict(_LLAMA_7B),
        image_token_id=32000,
    )


def _text_config(raw: dict) -> dict:
    from transformers import LlamaConfig

    known = (set(LlamaConfig().to_dict()) | {"rope_scaling", "rope_theta"}) - _NOT_TEXT_CONFIG
    return {"model_type": "llama", **{k: v for k, v in raw.items() if k in known}}


def _clip_vision_config(clip: Located):
    from transformers import CLIPVisionConfig

    try:
        return CLIPVisionConfig.from_pretrained(clip.path)  # a CLIPModel directory gives its vision_config
    except (OSError, ValueError) as error:
        raise SgeoError(
            f"{clip.path} is not a transformers CLIP directory ({error}); check the CLIP tower"
        ) from None


def reference_config(raw: dict, clip: Located, moge: Located) -> SpatialGeoConfig:
    """A LLaVA/SpatialGeo config.json -> SpatialGeoConfig (reads the CLIP config and the MoGe header)."""
    from .towers.moge_checkpoint import moge_backbone_name

    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise SgeoError(
            f"mm_vision_select_feature={raw['mm_vision_select_feature']!r} is not supported (only 'patch')"
        )
    if "unpad" in str(raw.get("mm_patch_merge_type", "flat")) or raw.get("image_aspect_ratio") == "anyres":
        raise SgeoError(
            "LLaVA-NeXT 'anyres' checkpoints are not supported; use a LLaVA-1.5 / SpatialGeo checkpoint"
        )
    vision = _clip_vision_config(clip)
    if raw.get("mm_hidden_size", vision.hidden_size) != vision.hidden_size:
        raise SgeoError(
            f"the checkpoint's mm_hidden_size {raw['mm_hidden_size']} differs from the CLIP tower's width "
            f"{vision.hidden_size} ({clip.path}); point at the CLIP it was trained with"
        )
    return SpatialGeoConfig(
        clip_path=clip.name,
        clip_vision_config=vision,
        clip_layer=raw.get("mm_vision_select_layer", -2),
        moge_path=moge.name,
        moge_backbone=moge_backbone_name(moge.path),
        text_config=_text_config(raw),
        image_token_id=raw.get("vocab_size", 32000),  # LLaVA's image token lies just past the vocabulary
        adapter_type=raw.get("mm_projector_type") or "linear",  # LLaVA's default when the config has none
    )


def reference_processor(resolved):
    """The processor of a reference checkpoint: its tokenizer, CLIP's own preprocessing, LLaVA's token rule."""
    from .processing import SpatialGeoProcessor, build_image_processor, load_tokenizer

    raw = resolved.raw_config
    aspect = raw.get("image_aspect_ratio")
    if aspect not in LLAVA_ASPECT:
        raise SgeoError(
            f"image_aspect_ratio={aspect!r} in {resolved.directory}/config.json is not one of pad, square"
        )
    clip = resolved.towers["clip"]
    vision = _clip_vision_config(clip)
    image_processor = clip_image_processor(clip) or build_image_processor(vision.image_size)
    tokenizer = load_tokenizer(resolved.tokenizer_dir)
    max_length = raw.get("tokenizer_model_max_length") or tokenizer.model_max_length
    return SpatialGeoProcessor(
        image_processor,
        tokenizer,
        2 * (vision.image_size // vision.patch_size) ** 2,
        image_aspect_ratio=LLAVA_ASPECT[aspect],
        model_max_length=int(max_length) if max_length and max_length < 1_000_000 else 2048,
        tokenization="llava",
    )


def clip_image_processor(clip: Located):
    """CLIP's preprocessing from its `preprocessor_config.json` (old `size: 336` forms included), as LLaVA."""
    from transformers import CLIPImageProcessor

    if not (Path(clip.path) / "preprocessor_config.json").is_file():
        return None
    return CLIPImageProcessor.from_pretrained(clip.path)


# -- weights ---------------------------------------------------------------------------------------
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


def read_bin(path: Path) -> dict[str, torch.Tensor]:
    """A torch.save'd state dict, tensors only (weights_only), memory-mapped where the format allows."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses pickled code; a cut file fails to unzip
        first = one_line(error, 160, first=True)
        raise SgeoError(
            f"{path} cannot be read as weights ({type(error).__name__}: {first}); replace it"
        ) from None
    if not isinstance(state, dict):
        raise SgeoError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _weight_files(directory: Path) -> list[Path]:
    """The checkpoint files that hold adapter keys (from the shard index when there is one)."""
    for name in INDEX_FILES:
        index = directory / name
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            files = {file for key, file in weight_map.items() if key.startswith(ADAPTER_PREFIXES)}
            return [directory / f for f in sorted(files)]
    files = sorted(f for f in directory.glob("*.safetensors") if f.name != "adapter_model.safetensors")
    return files or sorted(directory.glob("pytorch_model*.bin"))


def adapter_state(directory: Path) -> dict[str, torch.Tensor]:
    """Adapter tensors of a LLaVA / merged SpatialGeo checkpoint in our names; LLM tensors are not read."""
    from safetensors import safe_open

    state = {}
    for file in _weight_files(directory):
        if file.suffix == ".safetensors":
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if key.startswith(ADAPTER_PREFIXES):
                        state[map_reference_key(key)] = f.get_tensor(key)
        else:
            for key, value in read_bin(file).items():
                if key.startswith(ADAPTER_PREFIXES):
                    state[map_reference_key(key)] = value
    return state


def _mapped(state: dict[str, torch.Tensor], file: Path) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        mapped = map_reference_key(key)
        if mapped is None or not mapped.startswith(("clip_adapter.", "moge_adapter.")):
            raise SgeoError(
                f"{file} holds {key!r}, which is no adapter weight; is it a SpatialGeo release file?"
            )
        out[mapped] = value
    return out


def _load_llm(directory: Path, text_config, dtype, attn_implementation):
    """The LLM of a LLaVA checkpoint through transformers' loader; other keys (adapters, towers) are left."""
    from transformers import AutoModelForCausalLM

    kwargs = {"config": text_config, "dtype": dtype or torch.float32, "output_loading_info": True}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        llm, info = AutoModelForCausalLM.from_pretrained(directory, **kwargs)
    except (RuntimeError, ValueError, OSError) as error:
        detail = next((ln.strip() for ln in str(error).splitlines() if "size mismatch" in ln), None)
        raise SgeoError(
            f"{directory} does not fit its config.json: {detail or one_line(str(error), 200)}"
        ) from None
    missing = [k for k in info.get("missing_keys", []) if "rotary_emb" not in k]
    if missing or info.get("mismatched_keys"):
        raise SgeoError(
            f"{directory} does not match the LLaVA-1.5 layout: missing {sorted(missing)[:3]}, mismatched "
            f"{[m[0] if isinstance(m, tuple) else m for m in info.get('mismatched_keys', [])][:3]}"
        )
    return llm


def load_reference_model(resolved, *, dtype=None, attn_implementation=None, seed: int = 0):
    """A reference-layout ResolvedModel -> SpatialGeoForCausalLM (no towers).

    A plain LLaVA-1.5 has no MoGe adapter: it starts freshly initialised (seeded), as the reference's stage 1.
    """
    from .modeling import SpatialGeoForCausalLM

    config = resolved.config
    llm = _load_llm(resolved.weights_dir, config.text_config, dtype, attn_implementation)
    state = adapter_state(resolved.weights_dir)
    if resolved.layout == "reference-lora":
        from peft import PeftModel

        non_lora = resolved.directory / NON_LORA_WEIGHTS
        if not non_lora.is_file():
            raise SgeoError(f"{resolved.directory} is a LoRA checkpoint without {NON_LORA_WEIGHTS}")
        llm = PeftModel.from_pretrained(llm, resolved.directory).merge_and_unload()
        state.update(_mapped(read_bin(non_lora), non_lora))
    elif resolved.layout == "reference-stage1":
        file = resolved.directory / STAGE1_WEIGHTS
        state.update(_mapped(read_bin(file), file))
    model = SpatialGeoForCausalLM.from_language_model(config, llm, seed=seed)
    _load_adapters(model, state, resolved.directory)
    return model


def _load_adapters(model, state: dict[str, torch.Tensor], directory: Path) -> None:
    dtype = next(model.language_model.parameters()).dtype
    adapters = {
        k: v for k, v in model.state_dict().items() if k.startswith(("clip_adapter.", "moge_adapter."))
    }
    for key, value in state.items():
        if key in adapters and tuple(value.shape) != tuple(adapters[key].shape):
            raise SgeoError(
                f"{directory} does not fit its config.json: {key} has shape {tuple(value.shape)}, the model "
                f"{tuple(adapters[key].shape)}"
            )
    missing_clip = [k for k in adapters if k.startswith("clip_adapter.") and k not in state]
    moge_keys = [k for k in adapters if k.startswith("moge_adapter.")]
    partial_moge = any(k in state for k in moge_keys) and not all(k in state for k in moge_keys)
    unexpected = [k for k in state if k not in adapters]
    if missing_clip or partial_moge or unexpected:
        raise SgeoError(
            f"{directory} does not match the SpatialGeo layout: missing {missing_clip[:3]}, unexpected "
            f"{unexpected[:3]}{', a partial MoGe adapter' if partial_moge else ''}; is it a LLaVA-1.5 / "
            "SpatialGeo checkpoint?"
        )
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
