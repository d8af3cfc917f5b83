"""Writes random-init presets (`tiny`, `ref-dims`): seeded random-init parts in their real on-disk formats.

- `clip/`: a transformers `CLIPVisionModel` directory (fp32, as openai/clip-vit-large-patch14-336 ships);
- `moge/model.pt`: a MoGe v1 checkpoint (`{"model_config", "model"}`, fp32) with a DINOv2 backbone;
- `llm/`: a Llama with its tokenizer: a byte-level BPE trained deterministically at creation (`tiny`), or a
  SentencePiece `tokenizer.model` saved as LLaVA-1.5 ships it (`ref-dims`, see `spm.py`);
- `spatialgeo/`: the assembled starting model (adapters + LLM) with its processor, naming the towers by
  relative path so two homes hold byte-identical files.
Every part then loads through its real loader. Same seed, same sizes, same bytes.

`TINY` is small enough to train on 2 CPU cores in minutes; `VIT_B` gives benchmarks ViT-B towers;
`ref_dims(layers)` has the reference's shapes (CLIP ViT-L/14-336, MoGe ViT-L, a Llama-7B-shaped LLM with
`layers` layers, LLaVA's tokenizer rule), its towers and adapters with exactly the reference's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .conversation import IMAGE_TOKEN

TINY_SEED = 0
TOKENIZERS = ("bpe", "llama")
WEIGHT_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class RandomInitSizes:
    """Shapes and formats of a random-init preset; the defaults are the tiny preset's."""

    image_size: int = 112  # 8 x 8 patches of 14 px: 64 tokens per tower, 128 visual tokens per image
    clip_hidden: int = 64
    clip_intermediate: int = 128
    clip_layers: int = 3
    clip_heads: int = 4
    clip_projection: int = 32
    moge_backbone: str = "dinov2_vits14"  # the smallest DINOv2 that MoGe builds
    llm_hidden: int = 64
    llm_intermediate: int = 176
    llm_layers: int = 2
    llm_heads: int = 4
    llm_max_positions: int = 2048
    llm_rms_norm_eps: float = 1e-6
    # The std of the LLM's and adapters' random init (transformers' `initializer_range`). 0.02 is sized for
    # 4096-wide models; at 64 wide it starts attention logits near 0.03, every head uniform, so a head that
    # should find one object's few patches among 128 visual tokens is slow to sharpen; 1/sqrt(64) = 0.125
    # (fan-in) starts them at O(1). `bench/grounding_probe.py` measures both.
    llm_init_std: float = 0.02
    # "bpe": a byte-level BPE with `<image>` in its vocabulary, labels by character spans (`single_pass`);
    # "llama": LLaVA-1.5's SentencePiece files, `<image>` just past the vocabulary, LLaVA's `llava` rule.
    tokenizer: str = "bpe"
    vocab_size: int = 1024
    model_max_length: int = 2048
    # How the LLM and the adapters are saved (the towers are saved in fp32, as their releases are).
    weights_dtype: str = "float32"
    # The towers' position embeddings: 0 keeps the libraries' init (std 0.02, which a random-init tower's
    # content drowns: an attention probe cannot tell which third of the image a named object is in); s > 0
    # writes a fixed 2D sin-cos embedding of amplitude s, so that, as in a pretrained ViT, every patch token
    # says where it is (`bench/grounding_probe.py` measures both). Neither option is the tiny preset's yet:
    # the quickstart's recipe, tuned without them, scores lower with them (README, "The quickstart").
    position_embedding_scale: float = 0.0

    def __post_init__(self):
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer={self.tokenizer!r} is not one of {list(TOKENIZERS)}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"weights_dtype={self.weights_dtype!r} is not one of {list(WEIGHT_DTYPES)}")

    @property
    def tokenization(self) -> str:
        return "llava" if self.tokenizer == "llama" else "single_pass"


TINY = RandomInitSizes()
# The quickstart's preset: tiny's towers with a 2D sin-cos position embedding (as a pretrained ViT's patch
# tokens, each says where it is) and a 128-wide LLM drawn at fan-in scale (1/sqrt(128)), so attention can
# single out one object's patches from the start (bench/grounding_probe.py measures both choices).
DEMO = RandomInitSizes(
    position_embedding_scale=1.0, llm_hidden=128, llm_intermediate=352, llm_init_std=0.0884
)
# Encoders that dominate the cost (benchmarks): CLIP ViT-B at 224 px and MoGe with a ViT-B/14 backbone.
VIT_B = RandomInitSizes(
    image_size=224, clip_hidden=768, clip_intermediate=3072, clip_layers=12, clip_heads=12, clip_projection=512,
    moge_backbone="dinov2_vitb14",
)  # fmt: skip
# The reference's shapes: openai/clip-vit-large-patch14-336, MoGe ViT-L (Ruicheng/moge-vitl) and the LLM of
# liuhaotian/llava-v1.5-7b (Vicuna-7B: hidden 4096, 32 heads, intermediate 11008, 32000 SentencePiece pieces),
# whose depth `ref_dims` chooses. bf16 LLM and adapters: at 4096 x 32000 each embedding matrix is 131M.
REF_DIMS = RandomInitSizes(
    image_size=336, clip_hidden=1024, clip_intermediate=4096, clip_layers=24, clip_heads=16, clip_projection=768,
    moge_backbone="dinov2_vitl14", llm_hidden=4096, llm_intermediate=11008, llm_layers=2, llm_heads=32,
    llm_max_positions=4096, llm_rms_norm_eps=1e-5, tokenizer="llama", vocab_size=32000, model_max_length=2048,
    weights_dtype="bfloat16",
)  # fmt: skip


def ref_dims(layers: int = 2) -> RandomInitSizes:
    """The reference's shapes with a `layers`-layer LLM (32 is Vicuna-7B's depth)."""
    if layers < 1:
        raise ValueError(f"the LLM needs at least one layer, got {layers}")
    return replace(REF_DIMS, llm_layers=layers)


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
        special_tokens=["<unk>", "<s>", "</s>", IMAGE_TOKEN],
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
        additional_special_tokens=[IMAGE_TOKEN],
        model_max_length=2048,
        padding_side="right",
    )


@dataclass(frozen=True)
class _TokenIds:
    vocab: int  # rows of the LLM's embedding
    bos: int
    eos: int
    pad: int
    image: int  # the `<image>` id the processor gives (LLaVA: just past the vocabulary)


def _llama_ids(sizes: RandomInitSizes) -> _TokenIds:
    # LLaVA-1.5's: <unk> <s> </s> at 0 1 2, pad = <unk>, `<image>` added after the 32000 pieces
    return _TokenIds(sizes.vocab_size, 1, 2, 0, sizes.vocab_size)


def _clip_config(sizes: RandomInitSizes):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=sizes.clip_hidden,
        intermediate_size=sizes.clip_intermediate,
        num_hidden_layers=sizes.clip_layers,
        num_attention_heads=sizes.clip_heads,
        image_size=sizes.image_size,
        patch_size=14,
        projection_dim=sizes.clip_projection,
    )


def _moge_config(sizes: RandomInitSizes) -> dict:
    return {
        "encoder": sizes.moge_backbone,
        "intermediate_layers": 4,
        "dim_proj": 32,
        "dim_upsample": [32, 32, 32],
        "last_conv_channels": 32,
        "num_tokens_range": [16, (sizes.image_size // 14) ** 2],
    }


def _text_config(sizes: RandomInitSizes, ids: _TokenIds):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=ids.vocab,
        hidden_size=sizes.llm_hidden,
        intermediate_size=sizes.llm_intermediate,
        num_hidden_layers=sizes.llm_layers,
        num_attention_heads=sizes.llm_heads,
        num_key_value_heads=sizes.llm_heads,
        max_position_embeddings=sizes.llm_max_positions,
        rms_norm_eps=sizes.llm_rms_norm_eps,
        initializer_range=sizes.llm_init_std,
        bos_token_id=ids.bos,
        eos_token_id=ids.eos,
        pad_token_id=ids.pad,
        tie_word_embeddings=False,
    )


def _spatialgeo_config(sizes: RandomInitSizes, clip_config, text_config, image_token_id: int):
    from .configuration import SpatialGeoConfig

    return SpatialGeoConfig(
        clip_backend="hf",
        clip_path="../clip",
        clip_vision_config=clip_config,
        moge_path="../moge/model.pt",
        moge_backbone=sizes.moge_backbone,
        moge_layers=4,
        text_config=text_config,
        image_token_id=image_token_id,
    )


def geometry(sizes: RandomInitSizes):
    """The `SpatialGeoConfig` that `write_tiny(root, sizes=sizes)` writes, without writing anything (for
    parameter counts and store plans). Only for presets whose tokenizer ids are known in advance."""
    if sizes.tokenizer != "llama":
        raise ValueError("geometry() needs the llama tokenizer (a BPE's ids are known once it is trained)")
    ids = _llama_ids(sizes)
    return _spatialgeo_config(sizes, _clip_config(sizes), _text_config(sizes, ids), ids.image)


def _write_tokenizer(sizes: RandomInitSizes, llm_dir: Path):
    """The LLM's tokenizer, saved in `llm_dir`, and its ids."""
    if sizes.tokenizer == "bpe":
        tokenizer = build_tokenizer(sizes.vocab_size)
        ids = _TokenIds(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                        tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))  # fmt: skip
        return tokenizer, ids, lambda: tokenizer.save_pretrained(llm_dir)
    from .processing import load_tokenizer
    from .spm import write_llama_tokenizer

    write_llama_tokenizer(llm_dir, sizes.vocab_size)
    tokenizer = load_tokenizer(llm_dir)  # through the class LLaVA's tokenizer_config.json names
    if len(tokenizer) != sizes.vocab_size:
        raise RuntimeError(f"the SentencePiece model has {len(tokenizer)} pieces, not {sizes.vocab_size}")
    return tokenizer, _llama_ids(sizes), lambda: None


def _cast(module: torch.nn.Module, sizes: RandomInitSizes) -> torch.nn.Module:
    if sizes.weights_dtype == "float32":
        return module  # tiny: written exactly as before this option existed
    return module.to(getattr(torch, sizes.weights_dtype))


@torch.no_grad()
def write_sincos_table(table: torch.Tensor, scale: float) -> None:
    """A position table [1 + grid^2, D] set to `scale` x a 2D sin-cos grid over its patches, the CLS row zeros: the
    demo towers' rule (their patch tokens say where they are). A DINOv2 table keeps its own grid (37 x 37 for
    518 px), which the model interpolates to the input's."""
    from timm.layers import build_sincos2d_pos_embed

    grid = round((table.shape[0] - 1) ** 0.5)
    table[0] = 0.0
    table[1:] = scale * build_sincos2d_pos_embed([grid, grid], dim=table.shape[1])


def _write_position_embeddings(clip, moge, scale: float) -> None:
    """Set both towers' patch position embeddings by `write_sincos_table`."""
    from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

    # found by type: transformers 4 nests it under `vision_model`, 5 does not
    clip_embeddings = next(m for m in clip.modules() if isinstance(m, CLIPVisionEmbeddings))
    for table in (clip_embeddings.position_embedding.weight, moge.backbone.pos_embed[0]):
        write_sincos_table(table, scale)


def write_tiny(root: Path, seed: int = TINY_SEED, sizes: RandomInitSizes = TINY) -> Path:
    """Write every part (of `sizes`) under `root`; returns the SpatialGeo model directory."""
    from .load_context import quiet_loading

    with quiet_loading():  # no "Writing model shards" bars in the middle of a job's output
        return _write(Path(root), seed, sizes)


def _write(root: Path, seed: int, sizes: RandomInitSizes) -> Path:
    from moge.model.v1 import MoGeModel
    from transformers import CLIPVisionModel, LlamaForCausalLM

    from .modeling import SpatialGeoForCausalLM
    from .processing import SpatialGeoProcessor, build_image_processor

    tokenizer, ids, save_tokenizer = _write_tokenizer(sizes, root / "llm")

    torch.manual_seed(seed)
    clip_config = _clip_config(sizes)
    clip = CLIPVisionModel(clip_config)

    torch.manual_seed(seed + 1)
    moge_config = _moge_config(sizes)
    moge = MoGeModel(**moge_config)
    if sizes.position_embedding_scale:
        _write_position_embeddings(clip, moge, sizes.position_embedding_scale)
    clip.save_pretrained(root / "clip")
    del clip
    (root / "moge").mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": moge_config, "model": moge.state_dict()}, root / "moge" / "model.pt")
    del moge

    torch.manual_seed(seed + 2)
    text_config = _text_config(sizes, ids)
    llm = _cast(LlamaForCausalLM(text_config), sizes)  # cast before the second copy below exists
    llm.save_pretrained(root / "llm")
    save_tokenizer()

    torch.manual_seed(seed + 3)
    config = _spatialgeo_config(sizes, clip_config, text_config, ids.image)
    model = SpatialGeoForCausalLM(config)
    model.language_model = llm  # the same tensors as llm/ (and one LLM in memory, not two)
    model = _cast(model, sizes)
    out = root / "spatialgeo"
    # Saved through PreTrainedModel directly: the preset keeps its relative tower paths on purpose.
    super(SpatialGeoForCausalLM, model).save_pretrained(out)
    processor = SpatialGeoProcessor(
        build_image_processor(sizes.image_size), tokenizer, config.num_image_tokens,
        model_max_length=sizes.model_max_length, tokenization=sizes.tokenization,
    )  # fmt: skip
    if processor.image_token_id != ids.image:
        raise RuntimeError(f"the processor's <image> id {processor.image_token_id} is not {ids.image}")
    processor.save_pretrained(out)
    return out
