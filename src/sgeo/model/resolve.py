"""A `--model` resolved once: which directory, which layout, where the towers and the tokenizer are.

`resolve_model(name)` reads config files only, never a weight file, and returns a `ResolvedModel` that every
job passes along (to Ray actors, to the trainer, to the loaders) instead of the name. It knows these layouts:

- `sgeo`: a directory sgeo wrote (`model_type: spatialgeo`, with `processor_config.json`); a composed one
  (`sgeo compose`, and what training writes from it) names its LLM in `llm_path` and holds the adapters alone;
- `reference`: a LLaVA-1.5 checkpoint (`liuhaotian/llava-v1.5-7b`) or a merged SpatialGeo one: LLM and CLIP
  adapter (`model.mm_projector.*`), and for SpatialGeo the MoGe adapters (`model.moge_mm_projector_list.*`);
- `reference-lora`: the SpatialGeo stage-2 release (peft adapter + `non_lora_trainables.bin`) over LLaVA-1.5;
- `reference-stage1`: the SpatialGeo stage-1 release (`config.json` + `moge_mm_projector_list.bin`) over
  LLaVA-1.5.

Reference layouts find the LLaVA-1.5 they apply to at `SGEO_LLAVA_PATH` or in the HF cache, CLIP where
`mm_vision_tower` says (a path, or a hub id at `SGEO_CLIP_PATH` or in the HF cache), and MoGe at
`SGEO_MOGE_PATH`, a `vit_model.pt` inside the release directory, or `Ruicheng/moge-vitl` in the HF cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..errors import SgeoError
from .configuration import SPATIALGEO_FIELDS, SpatialGeoConfig, spatialgeo_towers
from .hub import REFERENCE_PARTS, Located, locate_llm, locate_tower
from .reference import STAGE1_WEIGHTS, reference_config, reference_processor
from .tower_spec import TowerSpec

REFERENCE_ARCHITECTURES = ("LlavaLlamaForCausalLM", "LlavaMoGeLlamaForCausalLM")
RELEASE_MOGE = "vit_model.pt"  # the DINOv2 state dict the SpatialGeo release ships
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ResolvedModel:
    """Everything that names the files of one model; picklable, so it travels to workers as it is."""

    name: str  # as the user gave it
    layout: (
        str  # sgeo, reference, reference-lora or reference-stage1 (the module docstring says which is which)
    )
    directory: Path  # the model's own directory
    base: Path | None  # the LLaVA-1.5 checkpoint a release applies to; a composed model's LLM
    towers: dict[str, Located]  # tower name -> where its weights load from, in fusion order

    @property
    def weights_dir(self) -> Path:
        """The directory whose LLM weights load (the base for releases without an LLM of their own)."""
        return self.base if self.base is not None else self.directory

    @property
    def tokenizer_dir(self) -> Path:
        if self.layout == "sgeo" or any((self.directory / f).is_file() for f in TOKENIZER_FILES):
            return self.directory
        return self.weights_dir

    @cached_property
    def raw_config(self) -> dict:
        return read_config_json(self.directory)

    @cached_property
    def config(self) -> SpatialGeoConfig:
        """The model's config; tower fields carry the names a saved model should keep (hub id or path)."""
        if self.layout == "sgeo":
            config = SpatialGeoConfig.from_pretrained(self.directory)
        else:
            config = reference_config(self.raw_config, self.towers["clip"], self.towers["moge"])
        for name, located in self.towers.items():
            config.set_tower_source(name, located.name)
        return config

    def processor(self):
        """A fresh processor (tokenizer + image preprocessing); no weight file is opened."""
        from .processing import SpatialGeoProcessor

        if self.layout == "sgeo":
            return SpatialGeoProcessor.from_pretrained(self.directory)
        return reference_processor(self)

    def describe(self) -> dict:
        """Where each part comes from, for logs and `train_config.json`."""
        parts = {"layout": self.layout, "directory": str(self.directory)}
        parts.update({name: located.path for name, located in self.towers.items()})
        if self.base is not None:
            parts["llm" if self.layout == "sgeo" else "base"] = str(self.base)
        return parts


def read_config_json(directory: Path) -> dict:
    path = Path(directory) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SgeoError(
            f"{directory} has no config.json; point --model at a model directory written by sgeo or LLaVA"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SgeoError(f"{path} is not valid JSON ({error}); restore it from the checkpoint") from None
    if not isinstance(raw, dict):
        raise SgeoError(f"{path} is not a JSON object; restore it from the checkpoint")
    return raw


def detect_layout(directory: Path, raw: dict) -> str:
    if raw.get("model_type") == "spatialgeo":
        return "sgeo"
    if "text_config" in raw and "vision_config" in raw and raw.get("model_type") == "llava":
        raise SgeoError(
            f"{directory} is a transformers-native llava-hf checkpoint; sgeo reads the original LLaVA-1.5 layout "
            "(liuhaotian/llava-v1.5-7b) and SpatialGeo checkpoints"
        )
    is_reference = (
        any(arch in REFERENCE_ARCHITECTURES for arch in raw.get("architectures") or [])
        or raw.get("model_type") in ("llava", "llava_llama")
        or "mm_vision_tower" in raw
    )
    if not is_reference:
        raise SgeoError(
            f"{directory}/config.json is neither an sgeo model (model_type spatialgeo) nor a LLaVA-1.5 / SpatialGeo "
            f"checkpoint (model_type {raw.get('model_type')!r}); point --model at one of those"
        )
    if (directory / "adapter_config.json").is_file():
        return "reference-lora"
    if has_llm_weights(directory):
        return "reference"
    if (directory / STAGE1_WEIGHTS).is_file():
        return "reference-stage1"
    raise SgeoError(
        f"{directory} is a LLaVA/SpatialGeo config without weights: no pytorch_model*.bin, *.safetensors, "
        f"{STAGE1_WEIGHTS} or LoRA adapter; copy the checkpoint's weight files there"
    )


def has_llm_weights(directory: Path) -> bool:
    return any(f.name != "adapter_model.safetensors" for f in directory.glob("*.safetensors")) or any(
        directory.glob("pytorch_model*.bin")
    )


def _release_base(directory: Path, layout: str) -> Path:
    what = "LoRA (stage-2) release" if layout == "reference-lora" else "stage-1 release"
    located = REFERENCE_PARTS["llava"].locate(needed_by=f"{directory} (a SpatialGeo {what})")
    base = Path(located.path)
    if not has_llm_weights(base):
        raise SgeoError(
            f"{base} holds no LLaVA-1.5 weights; point SGEO_LLAVA_PATH at liuhaotian/llava-v1.5-7b"
        )
    return base


def _moge_of_reference(directory: Path, needed_by: str) -> Located:
    part = REFERENCE_PARTS["moge"]
    if not os.environ.get(part.env) and (directory / RELEASE_MOGE).is_file():
        path = str((directory / RELEASE_MOGE).resolve())
        return Located(path, path)
    return part.locate(needed_by)


def resolve_directory(directory: Path, name: str) -> ResolvedModel:
    """A model directory of any known layout -> its ResolvedModel (config files only)."""
    directory = Path(directory).expanduser().resolve()
    raw = read_config_json(directory)
    layout = detect_layout(directory, raw)
    if layout == "sgeo":
        towers = {}
        for spec in tower_specs(raw, directory):
            if not spec.source:
                raise SgeoError(f"{directory}/config.json names no source for its {spec.name} tower; set it")
            towers[spec.name] = locate_tower(spec.source, spec.kind, directory, name)
        # a composed model (`sgeo compose`) refers to its LLM's weights instead of holding them
        llm = locate_llm(raw["llm_path"], directory, name) if raw.get("llm_path") else None
        return ResolvedModel(name, layout, directory, Path(llm.path) if llm else None, towers)
    base = _release_base(directory, layout) if layout in ("reference-lora", "reference-stage1") else None
    clip = locate_tower(
        raw.get("mm_vision_tower") or REFERENCE_PARTS["clip"].repo_id, "clip", directory, name
    )
    moge = _moge_of_reference(directory, name)
    return ResolvedModel(name, layout, directory, base, {"clip": clip, "moge": moge})


def tower_specs(raw: dict, directory: Path):
    """The towers an sgeo config.json lists (or, written before towers were a list, its SpatialGeo fields)."""
    try:
        towers = raw.get("vision_towers")
        if towers is None:
            towers = spatialgeo_towers(**{k: raw[k] for k in SPATIALGEO_FIELDS if k in raw})
        return [TowerSpec.from_dict(t) for t in towers]
    except (TypeError, ValueError) as error:
        raise SgeoError(
            f"{directory}/config.json: its towers are not valid ({error}); fix vision_towers"
        ) from None


def resolve_model(model: str | ResolvedModel) -> ResolvedModel:
    """A preset name or a model directory -> its ResolvedModel; a ResolvedModel passes through."""
    if isinstance(model, ResolvedModel):
        return model
    from .presets import PRESETS, preset_names

    if model in PRESETS:
        preset = PRESETS[model]
        resolved = resolve_directory(preset.directory(), model)
        if preset.layout is not None and resolved.layout != preset.layout:
            raise SgeoError(preset.wrong_layout(resolved.layout))
        return resolved
    path = Path(model).expanduser()
    if not path.is_dir():
        raise SgeoError(
            f"--model {model!r} is neither a preset ({', '.join(preset_names())}) nor a directory"
        )
    return resolve_directory(path, model)
