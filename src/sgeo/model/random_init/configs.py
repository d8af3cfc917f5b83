"""The configs of a random-init preset's parts for given sizes: CLIP's, MoGe's, the LLM's and the model's."""

from __future__ import annotations

from dataclasses import dataclass

from .sizes import RandomInitSizes


@dataclass(frozen=True)
class TokenIds:
    vocab: int  # rows of the LLM's embedding
    bos: int
    eos: int
    pad: int
    image: int  # the `<image>` id the processor gives (LLaVA: just past the vocabulary)


def llama_ids(sizes: RandomInitSizes) -> TokenIds:
    """LLaVA-1.5's: <unk> <s> </s> at 0 1 2, pad = <unk>, `<image>` added after the vocabulary's pieces."""
    return TokenIds(sizes.vocab_size, 1, 2, 0, sizes.vocab_size)


def clip_config(sizes: RandomInitSizes):
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


def moge_config(sizes: RandomInitSizes) -> dict:
    return {
        "encoder": sizes.moge_backbone,
        "intermediate_layers": 4,
        "dim_proj": 32,
        "dim_upsample": [32, 32, 32],
        "last_conv_channels": 32,
        "num_tokens_range": [16, (sizes.image_size // 14) ** 2],
    }


def text_config(sizes: RandomInitSizes, ids: TokenIds):
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


def spatialgeo_config(sizes: RandomInitSizes, clip, text, image_token_id: int):
    """The model's config over the parts' (`clip`, `text`), naming the towers by their relative paths."""
    from ..configuration import SpatialGeoConfig

    return SpatialGeoConfig(
        clip_backend="hf",
        clip_path="../clip",
        clip_vision_config=clip,
        moge_path="../moge/model.pt",
        moge_backbone=sizes.moge_backbone,
        moge_layers=4,
        text_config=text,
        image_token_id=image_token_id,
    )


def random_init_config(sizes: RandomInitSizes):
    """The `SpatialGeoConfig` that `write_random_init(root, sizes=sizes)` writes, without writing anything (for
    parameter counts and store plans). Only for presets whose tokenizer ids are known in advance."""
    if sizes.tokenizer != "llama":
        raise ValueError(
            "random_init_config() needs the llama tokenizer (a BPE's ids are known once it is trained)"
        )
    ids = llama_ids(sizes)
    return spatialgeo_config(sizes, clip_config(sizes), text_config(sizes, ids), ids.image)
