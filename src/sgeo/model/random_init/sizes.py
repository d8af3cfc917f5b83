"""`RandomInitSizes`: the shapes and formats of a random-init preset, and the presets' own sizes.

`TINY` is small enough to train on 2 CPU cores in minutes; `DEMO` is the quickstart's; `VIT_B` gives
benchmarks ViT-B towers; `ref_dims(layers)` has the reference's shapes (CLIP ViT-L/14-336, MoGe ViT-L, a
Llama-7B-shaped LLM with `layers` layers, LLaVA's tokenizer rule), its towers and adapters with exactly the
reference's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    # says where it is (`bench/grounding_probe.py` measures both). The tiny preset keeps the libraries' init
    # here and in `llm_init_std` (its files stay what they were); the demo preset, the quickstart's, sets
    # both (`DEMO` below).
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
