"""Tiny stand-ins for the public checkpoints, written in exactly their published layouts.

- `openai/clip-vit-large-patch14-336`: a full `CLIPModel` directory (`config.json` with text and vision configs,
  `pytorch_model.bin`, an old-style `preprocessor_config.json` with `crop_size`/`size` as plain ints);
- `Ruicheng/moge-vitl`: `model.pt` = `{"model_config", "model"}` (MoGe v1);
- `liuhaotian/llava-v1.5-7b`: `config.json` with LLaVA's fields (`model_type: llava`), fp16
  `pytorch_model-0000N-of-00002.bin` shards + `pytorch_model.bin.index.json` (LLM, `model.mm_projector.*` and
  the vision tower's `model.vision_tower.vision_tower.*` keys), a SentencePiece `tokenizer.model` with a
  `tokenizer_config.json` naming `LlamaTokenizer` (no `tokenizer.json`), `special_tokens_map.json`,
  `generation_config.json`;
- the SpatialGeo release as its `llava/train/train.py` writes it: stage 2 = `config.json` + peft
  `adapter_config.json` + `adapter_model.safetensors` + `non_lora_trainables.bin` (bf16, keys
  `base_model.model.model.mm_projector.*`, `base_model.model.model.moge_mm_projector_list.{0..3}.*`);
  stage 1 = `config.json` + `moge_mm_projector_list.bin`; `vit_model.pt`, a bare DINOv2 state dict;
- a merged release as `scripts/merge_lora_weights.py` saves it (`save_pretrained`: safetensors shards and index,
  the tokenizer beside it);
- an HF cache (`$HF_HOME/hub/models--org--name/{refs/main, snapshots/<commit>/, blobs/}`) holding the first three.

Sizes are tiny (width 64, 2 layers, 112 px); names, keys, dtypes and config fields are the real ones.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

CLIP_REPO, MOGE_REPO, LLAVA_REPO = (
    "openai/clip-vit-large-patch14-336",
    "Ruicheng/moge-vitl",
    "liuhaotian/llava-v1.5-7b",
)
IMAGE_SIZE, VOCAB = 112, 1000


@dataclass
class StandIns:
    clip: Path
    moge: Path
    vit_model: Path
    llava: Path
    stage1: Path
    lora: Path
    merged: Path
    hf_home: Path
    tensors: dict = field(default_factory=dict)  # what each checkpoint holds, for equality checks


def write_clip(directory: Path, seed: int = 11) -> Path:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 99, "max_position_embeddings": 77},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                       "image_size": IMAGE_SIZE, "patch_size": 14},
        projection_dim=32,
    )  # fmt: skip
    model = CLIPModel(config)
    directory.mkdir(parents=True)
    config.save_pretrained(directory)
    torch.save(
        model.state_dict(), directory / "pytorch_model.bin"
    )  # the repo's (pre-safetensors) weights file
    preprocessor = {  # the old-style file of openai/clip-vit-large-patch14-336, at IMAGE_SIZE
        "crop_size": IMAGE_SIZE, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": IMAGE_SIZE,
    }  # fmt: skip
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return directory


def write_moge(directory: Path, seed: int = 12) -> Path:
    from moge.model.v1 import MoGeModel

    torch.manual_seed(seed)
    moge_config = {"encoder": "dinov2_vits14", "intermediate_layers": 4, "dim_proj": 32, "dim_upsample": [32, 32, 32],
                   "last_conv_channels": 32, "num_tokens_range": [16, 64]}  # fmt: skip
    directory.mkdir(parents=True)
    torch.save(
        {"model_config": moge_config, "model": MoGeModel(**moge_config).state_dict()}, directory / "model.pt"
    )
    return directory / "model.pt"


def write_vit_model(moge_pt: Path, path: Path) -> Path:
    """The release's vit_model.pt: the bare DINOv2 backbone state dict (here the stand-in MoGe's own)."""
    model = torch.load(moge_pt, weights_only=True)["model"]
    torch.save({k.removeprefix("backbone."): v for k, v in model.items() if k.startswith("backbone.")}, path)
    return path


def _llava_config(llm_config, clip_hidden: int) -> dict:
    config = {k: v for k, v in llm_config.to_dict().items() if k not in ("dtype", "transformers_version")}
    config.update(  # the fields of liuhaotian/llava-v1.5-7b/config.json
        _name_or_path="./checkpoints/vicuna-7b-v1-5", architectures=["LlavaLlamaForCausalLM"], model_type="llava",
        freeze_mm_mlp_adapter=False, image_aspect_ratio="pad", image_grid_pinpoints=None, max_length=4096,
        mm_hidden_size=clip_hidden, mm_projector_type="mlp2x_gelu", mm_resampler_type=None,
        mm_use_im_patch_token=False, mm_use_im_start_end=False, mm_vision_select_feature="patch",
        mm_vision_select_layer=-2, mm_vision_tower=CLIP_REPO, pretraining_tp=1, rope_scaling=None,
        torch_dtype="float16", transformers_version="4.31.0", tune_mm_mlp_adapter=False,
        tune_mm_vision_resampler=False, unfreeze_mm_vision_tower=False, use_cache=True, use_mm_proj=True,
    )  # fmt: skip
    return config


def _mlp(width_in: int, width_out: int, prefix: str, dtype) -> dict:
    return {
        f"{prefix}.0.weight": torch.randn(width_out, width_in).to(dtype), f"{prefix}.0.bias": torch.randn(width_out).to(dtype),
        f"{prefix}.2.weight": torch.randn(width_out, width_out).to(dtype), f"{prefix}.2.bias": torch.randn(width_out).to(dtype),
    }  # fmt: skip


def _save_shards(state: dict, directory: Path, safetensors: bool) -> None:
    """Two shards and an index, named as transformers names them (`pytorch_model-00001-of-00002.bin` /
    `model-00001-of-00002.safetensors`)."""
    keys = sorted(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    stem, suffix = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    weight_map = {}
    for i, part in enumerate(halves, 1):
        name = f"{stem}-{i:05d}-of-00002.{suffix}"
        shard = {k: state[k].contiguous() for k in part}
        if safetensors:
            from safetensors.torch import save_file

            save_file(shard, directory / name, metadata={"format": "pt"})
        else:
            torch.save(shard, directory / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / f"{stem}.{suffix}.index.json").write_text(json.dumps(index, indent=2))


def write_llava(directory: Path, clip_dir: Path, seed: int = 13) -> tuple[Path, dict]:
    from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from sgeo.model.spm import write_llama_tokenizer

    torch.manual_seed(seed)
    llm_config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
                             rms_norm_eps=1e-5)  # fmt: skip
    state = {k: v.to(torch.float16) for k, v in LlamaForCausalLM(llm_config).state_dict().items()}
    clip_hidden = 64
    state.update(_mlp(clip_hidden, 64, "model.mm_projector", torch.float16))
    vision = CLIPVisionModel.from_pretrained(clip_dir).state_dict()
    state.update({f"model.vision_tower.vision_tower.{k}": v.to(torch.float16) for k, v in vision.items()})
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(_llava_config(llm_config, clip_hidden), indent=2))
    generation = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                  "transformers_version": "4.31.0"}  # fmt: skip
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    _save_shards(state, directory, safetensors=False)
    write_llama_tokenizer(directory, vocab_size=VOCAB)
    return directory, state


def _release_config(llava_dir: Path, **fields) -> dict:
    # LlavaConfig.save_pretrained of the model trained from liuhaotian/llava-v1.5-7b (model_type llava_llama)
    config = json.loads((llava_dir / "config.json").read_text())
    config.update(_name_or_path=LLAVA_REPO, model_type="llava_llama", transformers_version="4.37.2",
                  tokenizer_model_max_length=2048, tokenizer_padding_side="right", **fields)  # fmt: skip
    return config


def write_stage1_release(directory: Path, llava_dir: Path, seed: int = 14) -> tuple[Path, dict]:
    torch.manual_seed(seed)
    moge = {}
    for i in range(4):
        moge.update(_mlp(384, 64, f"model.moge_mm_projector_list.{i}", torch.bfloat16))
    directory.mkdir(parents=True)
    # pretrainmoge.sh passes no --image_aspect_ratio: DataArguments' default "square" lands in the config
    config = _release_config(
        llava_dir, image_aspect_ratio="square", tune_mm_mlp_adapter=True, mm_projector_lr=None
    )
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    torch.save(moge, directory / "moge_mm_projector_list.bin")
    return directory, moge


def write_lora_release(directory: Path, llava_dir: Path, llava_state: dict, stage1: dict, seed: int = 15):
    """peft's save_pretrained of LoRA r=8 on every linear layer, and the trained adapters beside it."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    llm_config = LlamaConfig(**{k: v for k, v in json.loads((llava_dir / "config.json").read_text()).items()
                                if k in LlamaConfig().to_dict() and k not in ("architectures", "model_type")})  # fmt: skip
    llm = LlamaForCausalLM(llm_config)
    llm.load_state_dict({k: v.float() for k, v in llava_state.items() if not k.startswith("model.mm_projector")
                         and "vision_tower" not in k})  # fmt: skip
    targets = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    lora = get_peft_model(llm, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=targets,
                                          bias="none", task_type="CAUSAL_LM", init_lora_weights=False))  # fmt: skip
    lora.to(torch.bfloat16)  # the finetune script trains in bf16
    directory.mkdir(parents=True)
    lora.save_pretrained(directory)  # adapter_config.json + adapter_model.safetensors
    adapter_config = json.loads((directory / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = LLAVA_REPO
    (directory / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    non_lora = _mlp(64, 64, "base_model.model.model.mm_projector", torch.bfloat16)
    non_lora.update({"base_model.model." + k: (v + 1).to(torch.bfloat16) for k, v in stage1.items()})
    torch.save(non_lora, directory / "non_lora_trainables.bin")
    config = _release_config(
        llava_dir, image_aspect_ratio="pad", mm_projector_lr=2e-5, tune_mm_mlp_adapter=False
    )
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory, lora, non_lora


def write_merged_release(
    directory: Path, lora_dir: Path, lora_model, non_lora: dict, llava_state: dict
) -> tuple[Path, dict]:
    """What merge_lora_weights.py saves: LLM with LoRA merged (fp16), both adapters, the towers, tokenizer."""
    merged_llm = copy.deepcopy(lora_model).merge_and_unload().state_dict()
    state = {k: v.to(torch.float16) for k, v in merged_llm.items()}
    state.update({k.removeprefix("base_model.model."): v.to(torch.float16) for k, v in non_lora.items()})
    state.update({k: v for k, v in llava_state.items() if "vision_tower" in k})
    directory.mkdir(parents=True)
    shutil.copy(lora_dir / "config.json", directory / "config.json")
    _save_shards(state, directory, safetensors=True)
    return directory, state


def put_in_hf_cache(hf_home: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """A snapshot in huggingface_hub's cache layout: blobs by content hash, snapshot files as symlinks."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        blob = repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copy(source, blob)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snapshot / name).parent), snapshot / name)
    return snapshot


def write_all(root: Path) -> StandIns:
    clip = write_clip(root / "clip-vit-large-patch14-336")
    moge = write_moge(root / "moge-vitl")
    vit_model = write_vit_model(moge, root / "vit_model.pt")
    llava, llava_state = write_llava(root / "llava-v1.5-7b", clip)
    stage1, stage1_state = write_stage1_release(root / "spatialgeo-stage1", llava)
    lora, lora_model, non_lora = write_lora_release(
        root / "spatialgeo-lora", llava, llava_state, stage1_state
    )
    merged, merged_state = write_merged_release(
        root / "spatialgeo-merged", lora, lora_model, non_lora, llava_state
    )
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(llava / name, merged / name)  # tokenizer.save_pretrained in merge_lora_weights.py
    hf_home = root / "hf_home"
    put_in_hf_cache(hf_home, CLIP_REPO, {p.name: p for p in clip.iterdir()})
    put_in_hf_cache(hf_home, MOGE_REPO, {"model.pt": moge})
    put_in_hf_cache(hf_home, LLAVA_REPO, {p.name: p for p in llava.iterdir()})
    tensors = {"llava": llava_state, "stage1": stage1_state, "non_lora": non_lora, "merged": merged_state}
    return StandIns(clip, moge, vit_model, llava, stage1, lora, merged, hf_home, tensors)
