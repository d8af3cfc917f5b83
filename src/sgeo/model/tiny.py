"""Writes the `tiny` preset: seeded random-init parts in their real on-disk formats.

- `clip/`: a transformers `CLIPVisionModel` directory;
- `moge/model.pt`: a MoGe v1 checkpoint (`{"model_config", "model"}`) with a ViT-S/14 backbone (the smallest
  DINOv2 that MoGe builds; `VIT_B` sizes write ViT-B towers for benchmarks);
- `llm/`: a 2-layer Llama with a byte-level BPE tokenizer trained deterministically at creation;
- `spatialgeo/`: the assembled starting model (adapters + LLM) with its processor, naming the towers by
  relative path so two homes hold byte-identical files.
Every part then loads through its real loader. Same seed, same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

TINY_SEED = 0


@dataclass(frozen=True)
class RandomInitSizes:
    """Tower sizes of a random-init preset; the LLM is always the tiny 2-layer Llama."""

    image_size: int = 112  # 8 x 8 patches of 14 px: 64 tokens per tower, 128 visual tokens per image
    clip_hidden: int = 64
    clip_intermediate: int = 128
    clip_layers: int = 3
    clip_heads: int = 4
    clip_projection: int = 32
    moge_backbone: str = "dinov2_vits14"  # the smallest DINOv2 that MoGe builds


TINY = RandomInitSizes()
# Encoders that dominate the cost (benchmarks): CLIP ViT-B at 224 px and MoGe with a ViT-B/14 backbone.
VIT_B = RandomInitSizes(
    image_size=224, clip_hidden=768, clip_intermediate=3072, clip_layers=12, clip_heads=12, clip_projection=512,
    moge_backbone="dinov2_vitb14",
)  # fmt: skip

_CORPUS_WORDS = (
    "the a an of to in on at is are was be and or not no yes with from by for as it this that there what which "
    "how far tall wide big small left right above below front behind closer farther taller shorter wider "
    "thinner bigger smaller larger height width distance depth meter meters metre centimeters cm m feet inches "
    "about around approximately roughly object objects box boxes sphere spheres cylinder cylinders cube ball "
    "red green blue yellow purple orange white black gray pink brown cyan image picture photo scene camera "
    "describe briefly many count o'clock direction between horizontal vertical answer question one two three "
    "four five six seven eight nine ten zero point floor ground table"
)


# The corpus is frozen text (not the live template strings), so the preset's bytes never move with them.
_CORPUS_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


def _corpus() -> list[str]:
    system = _CORPUS_SYSTEM
    numbers = " ".join(f"{i / 10:.1f} {i / 100:.2f} {i}" for i in range(0, 200))
    return [system + " USER: ASSISTANT:", _CORPUS_WORDS, _CORPUS_WORDS.capitalize(), numbers] * 4


def build_tokenizer(vocab_size: int = 1024):
    """A Llama-style (<unk>, <s>, </s>) byte-level BPE tokenizer, trained deterministically."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        additional_special_tokens=["<image>"],
        model_max_length=2048,
        padding_side="right",
    )


def write_tiny(root: Path, seed: int = TINY_SEED, sizes: RandomInitSizes = TINY) -> Path:
    """Write every part (of `sizes`) under `root`; returns the SpatialGeo model directory."""
    from moge.model.v1 import MoGeModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from .configuration import SpatialGeoConfig
    from .modeling import SpatialGeoForCausalLM
    from .processing import SpatialGeoProcessor, build_image_processor

    root = Path(root)
    tokenizer = build_tokenizer()

    torch.manual_seed(seed)
    clip_config = CLIPVisionConfig(
        hidden_size=sizes.clip_hidden,
        intermediate_size=sizes.clip_intermediate,
        num_hidden_layers=sizes.clip_layers,
        num_attention_heads=sizes.clip_heads,
        image_size=sizes.image_size,
        patch_size=14,
        projection_dim=sizes.clip_projection,
    )
    CLIPVisionModel(clip_config).save_pretrained(root / "clip")

    torch.manual_seed(seed + 1)
    moge_config = {
        "encoder": sizes.moge_backbone,
        "intermediate_layers": 4,
        "dim_proj": 32,
        "dim_upsample": [32, 32, 32],
        "last_conv_channels": 32,
        "num_tokens_range": [16, (sizes.image_size // 14) ** 2],
    }
    moge = MoGeModel(**moge_config)
    (root / "moge").mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": moge_config, "model": moge.state_dict()}, root / "moge" / "model.pt")

    torch.manual_seed(seed + 2)
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    llm = LlamaForCausalLM(text_config)
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")

    torch.manual_seed(seed + 3)
    config = SpatialGeoConfig(
        clip_backend="hf",
        clip_path="../clip",
        clip_vision_config=clip_config,
        moge_path="../moge/model.pt",
        moge_backbone=sizes.moge_backbone,
        moge_layers=4,
        text_config=text_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    model = SpatialGeoForCausalLM(config)
    model.language_model.load_state_dict(llm.state_dict())
    out = root / "spatialgeo"
    # Saved through PreTrainedModel directly: the preset keeps its relative tower paths on purpose.
    super(SpatialGeoForCausalLM, model).save_pretrained(out)
    processor = SpatialGeoProcessor(
        build_image_processor(sizes.image_size), tokenizer, config.num_image_tokens
    )
    processor.save_pretrained(out)
    return out
