"""`write_random_init`: every part of a random-init preset, seeded, written under one root (see the package
docstring for the layout). Same seed, same sizes, same bytes."""

from __future__ import annotations

from pathlib import Path

import torch

from ..conversation import IMAGE_TOKEN
from .configs import TokenIds, clip_config, llama_ids, moge_config, spatialgeo_config, text_config
from .positions import write_clip_and_moge_positions
from .sizes import TINY, TINY_SEED, RandomInitSizes


def write_random_init(root: Path, seed: int = TINY_SEED, sizes: RandomInitSizes = TINY) -> Path:
    """Write every part (of `sizes`) under `root`; returns the SpatialGeo model directory."""
    from ..load_context import quiet_loading

    with quiet_loading():  # no "Writing model shards" bars in the middle of a job's output
        return _write(Path(root), seed, sizes)


def _write_tokenizer(sizes: RandomInitSizes, llm_dir: Path):
    """The LLM's tokenizer, its ids, and a call that saves it in `llm_dir` (the BPE is saved after the LLM)."""
    if sizes.tokenizer == "bpe":
        from .bpe_tokenizer import train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer(sizes.vocab_size)
        ids = TokenIds(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id,
                       tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))  # fmt: skip
        return tokenizer, ids, lambda: tokenizer.save_pretrained(llm_dir)
    from ..processing import load_tokenizer
    from ..spm import write_llama_tokenizer

    write_llama_tokenizer(llm_dir, sizes.vocab_size)
    tokenizer = load_tokenizer(llm_dir)  # through the class LLaVA's tokenizer_config.json names
    if len(tokenizer) != sizes.vocab_size:
        raise RuntimeError(f"the SentencePiece model has {len(tokenizer)} pieces, not {sizes.vocab_size}")
    return tokenizer, llama_ids(sizes), lambda: None


def _cast(module: torch.nn.Module, sizes: RandomInitSizes) -> torch.nn.Module:
    if sizes.weights_dtype == "float32":
        return module  # tiny: written exactly as before this option existed
    return module.to(getattr(torch, sizes.weights_dtype))


def _write(root: Path, seed: int, sizes: RandomInitSizes) -> Path:
    from moge.model.v1 import MoGeModel
    from transformers import CLIPVisionModel, LlamaForCausalLM

    from ..modeling import SpatialGeoForCausalLM
    from ..processing import SpatialGeoProcessor, build_image_processor

    tokenizer, ids, save_tokenizer = _write_tokenizer(sizes, root / "llm")

    torch.manual_seed(seed)
    clip_cfg = clip_config(sizes)
    clip = CLIPVisionModel(clip_cfg)

    torch.manual_seed(seed + 1)
    moge_cfg = moge_config(sizes)
    moge = MoGeModel(**moge_cfg)
    if sizes.position_embedding_scale:
        write_clip_and_moge_positions(clip, moge, sizes.position_embedding_scale)
    clip.save_pretrained(root / "clip")
    del clip
    (root / "moge").mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": moge_cfg, "model": moge.state_dict()}, root / "moge" / "model.pt")
    del moge

    torch.manual_seed(seed + 2)
    text_cfg = text_config(sizes, ids)
    llm = _cast(LlamaForCausalLM(text_cfg), sizes)  # cast before the second copy below exists
    llm.save_pretrained(root / "llm")
    save_tokenizer()

    torch.manual_seed(seed + 3)
    config = spatialgeo_config(sizes, clip_cfg, text_cfg, ids.image)
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
