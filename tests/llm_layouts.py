"""Tiny stand-ins for chat LLMs, written in their exact public layouts (issue 26).

Each `write_*` writes one directory as the Hub repository holds it, at tiny sizes:

- `Qwen/Qwen2.5-7B-Instruct`: config.json (Qwen2ForCausalLM), generation_config.json (eos [<|im_end|>,
  <|endoftext|>]), 4 bf16 safetensors shards + model.safetensors.index.json, tokenizer.json, vocab.json,
  merges.txt, tokenizer_config.json (Qwen2Tokenizer, the 22 added tokens, ChatML template with its default
  system message); no special_tokens_map.json, as published.
- `meta-llama/Llama-3.1-8B-Instruct`: config.json (LlamaForCausalLM, llama3 rope scaling, three eos ids),
  generation_config.json, 4 bf16 safetensors shards + index, tokenizer.json (BOS added by its post-processor),
  tokenizer_config.json (PreTrainedTokenizerFast, the 256 special tokens), special_tokens_map.json.
- `Qwen/Qwen3-8B`: as Qwen2.5 with Qwen3ForCausalLM (explicit head_dim), 5 shards, the 26 added tokens
  (<think> / </think> among them) and the Qwen3 template (enable_thinking).
- `lmsys/vicuna-7b-v1.5`: config.json (LlamaForCausalLM, fp16), generation_config.json, 2 fp16
  pytorch_model-0000N-of-00002.bin shards + pytorch_model.bin.index.json, a SentencePiece tokenizer.model
  with tokenizer_config.json (LlamaTokenizer, legacy false) and special_tokens_map.json; no chat template (the
  revision LLaVA-1.5 trained from; main briefly gained one in PR #7 and lost it the next day, "Revert chat
  template", 3321f76).

Tiny means: hidden 64, 2 layers, 4 heads (2 KV heads where the family uses GQA), and a small vocabulary: a
byte-level BPE trained here with the `tokenizers` library using the family's own pre-tokenizer regex,
normalizer and post-processor (Vicuna: sgeo's deterministic SentencePiece, spm.py). The published special
tokens follow it as added tokens, in their published order and with their published flags, so their ids are
`published id - first published added id + len(tiny BPE)`: the real ids (151643..., 128000...) would need a
150k-row embedding. Every file naming an id (config.json, generation_config.json, tokenizer_config.json's
added_tokens_decoder) names the tiny one; `PUBLISHED_IDS` keeps the published ones. `config.json`'s
`vocab_size` is padded as the family pads it (Qwen: past the tokenizer, to a multiple of 64 here; Llama and
Vicuna: exactly the tokenizer). Everything else (field names, values, file names, shard naming, dtypes,
templates) is as published.

Sources read (repository, path): chat templates, see tests/data/llm_layouts/chat_templates.json
(ggml-org/llama.cpp models/templates/*.jinja and huggingface/huggingface.js packages/jinja/test/e2e.test.js,
identical byte for byte). config.json / generation_config.json / tokenizer_config.json fields: the Hub files of
each repository as mirrored on huggingface.co pages (Qwen2.5 generation_config [151645, 151643], Llama-3.1
generation_config [128001, 128008, 128009] with temperature 0.6 / top_p 0.9, Qwen3-8B config.json copied
verbatim in "Copy config.json from Qwen/Qwen3-8B" commits, Vicuna's file list and byte sizes: config.json 615
bytes, generation_config.json 162, tokenizer_config.json 749, special_tokens_map.json 438, which the dicts
below reproduce exactly).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data" / "llm_layouts"
QWEN25, LLAMA31, QWEN3, VICUNA = (
    "Qwen/Qwen2.5-7B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen3-8B",
    "lmsys/vicuna-7b-v1.5",
)
CHAT_FAMILIES = (QWEN25, LLAMA31, QWEN3)

# The published pre-tokenizer regexes (tokenizer.json, pre_tokenizer.pretokenizers[0].pattern.Regex).
QWEN_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

_QWEN25_ADDED = [  # (content, special) from id 151643 on, as in tokenizer_config.json's added_tokens_decoder
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]  # fmt: skip
_QWEN3_ADDED = _QWEN25_ADDED + [
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
]  # fmt: skip
_QWEN_ADDITIONAL_SPECIAL = [c for c, special in _QWEN25_ADDED[1:14]]  # <|im_start|> ... <|video_pad|>
_QWEN_FIRST_ID = 151643


def _llama3_specials() -> list[str]:
    """Llama-3.1's 256 special tokens, ids 128000..128255."""
    named = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>", 6: "<|start_header_id|>",
             7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>", 10: "<|python_tag|>"}  # fmt: skip
    reserved = iter(range(248))
    return [named[i] if i in named else f"<|reserved_special_token_{next(reserved)}|>" for i in range(256)]


_LLAMA3_FIRST_ID = 128000

PUBLISHED_IDS = {  # the ids the published files name, for reference (the stand-ins name the tiny ones)
    QWEN25: {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "eos": [151645, 151643]},
    QWEN3: {"<|endoftext|>": 151643, "<|im_end|>": 151645, "<think>": 151667, "</think>": 151668,
            "eos": [151645, 151643]},
    LLAMA31: {"<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|eom_id|>": 128008, "<|eot_id|>": 128009,
              "eos": [128001, 128008, 128009]},
    VICUNA: {"<unk>": 0, "<s>": 1, "</s>": 2, "eos": [2]},
}  # fmt: skip

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


def chat_template(repo_id: str) -> str:
    """The published chat template of `repo_id`, verbatim."""
    return json.loads((DATA / "chat_templates.json").read_text())[repo_id]


def _added(content: str, special: bool) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special}  # fmt: skip


def _dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# -- tokenizers ---------------------------------------------------------------------------------------
_WORDS = (
    "the a an of to in on at is are was be and or not no yes with from by for as it this that there what which "
    "how far tall wide big small left right above below front behind closer farther taller shorter wider "
    "height width distance depth meter meters centimeters about object objects box sphere cylinder cube red "
    "green blue yellow purple orange white black gray image picture photo scene camera describe briefly many "
    "count answer question you are qwen created by alibaba cloud helpful assistant user system cutting "
    "knowledge date today december jul environment"
)


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    words = _WORDS.split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) for _ in range(3000)]
    lines += [
        f"{w.capitalize()} {rng.choice(words)}? {rng.randint(0, 999)} {rng.random():.2f}m." for w in words
    ]
    lines += ["user\n", "assistant\n", "system\n", "\n\n", "You are Qwen, created by Alibaba Cloud."] * 50
    return lines


def _bpe(regex: str, nfc: bool, llama_post: bool, added: list[tuple[str, bool]], vocab_size: int, seed: int):
    """A byte-level BPE built as the family's tokenizer.json is (normalizer, Split regex + ByteLevel,
    post-processor, decoder), trained on a small corpus, then the published added tokens in order."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE(ignore_merges=llama_post))
    if nfc:
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=llama_post, use_regex=False),
    ])  # fmt: skip
    # Llama-3's decoder is ByteLevel(True, True, True), Qwen2's ByteLevel(False, False, False)
    tokenizer.decoder = decoders.ByteLevel(
        add_prefix_space=llama_post, trim_offsets=llama_post, use_regex=llama_post
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_corpus(seed), trainer=trainer)
    for content, special in added:  # one at a time: ids follow the published order
        tokenizer.add_tokens([AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                                         special=special)])  # fmt: skip
    if llama_post:
        bos = added[0][0]
        tokenizer.post_processor = processors.Sequence([
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                          special_tokens=[(bos, tokenizer.token_to_id(bos))]),
        ])  # fmt: skip
    else:
        tokenizer.post_processor = processors.ByteLevel(
            add_prefix_space=False, trim_offsets=False, use_regex=False
        )
    return tokenizer


def _added_decoder(tokenizer, added: list[tuple[str, bool]]) -> dict:
    return {str(tokenizer.token_to_id(content)): _added(content, special) for content, special in added}


# -- weights ------------------------------------------------------------------------------------------
def _save_shards(state: dict, directory: Path, shards: int, safetensors: bool) -> None:
    """`shards` files and their index, named as transformers names them."""
    keys = list(state)
    size = -(-len(keys) // shards)
    stem, suffix = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    weight_map = {}
    for i in range(shards):
        part = keys[i * size : (i + 1) * size]
        name = f"{stem}-{i + 1:05d}-of-{shards:05d}.{suffix}"
        shard = {k: state[k].contiguous() for k in part}
        if safetensors:
            from safetensors.torch import save_file

            save_file(shard, directory / name, metadata={"format": "pt"})
        else:
            torch.save(shard, directory / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    _dump(
        directory / f"{stem}.{suffix}.index.json",
        {"metadata": {"total_size": total}, "weight_map": weight_map},
    )


def _write_weights(directory: Path, seed: int, dtype: torch.dtype, shards: int, safetensors: bool) -> None:
    """Random-init weights of the architecture config.json names, through transformers' own classes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(directory)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    state = {k: v.to(dtype) for k, v in model.state_dict().items()}
    _save_shards(state, directory, shards, safetensors)


def _padded(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple


# -- families -----------------------------------------------------------------------------------------
def _write_qwen(directory: Path, repo_id: str, seed: int) -> Path:
    added = _QWEN3_ADDED if repo_id == QWEN3 else _QWEN25_ADDED
    tokenizer = _bpe(QWEN_REGEX, nfc=True, llama_post=False, added=added, vocab_size=480, seed=seed)
    ids = {content: tokenizer.token_to_id(content) for content, _ in added}
    directory.mkdir(parents=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.model.save(str(directory))  # vocab.json + merges.txt (the BPE alone, as published)
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": _added_decoder(tokenizer, added),
        "additional_special_tokens": _QWEN_ADDITIONAL_SPECIAL,
        "bos_token": None,
        "chat_template": chat_template(repo_id),
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    _dump(directory / "tokenizer_config.json", tokenizer_config)
    eot, eos = ids["<|im_end|>"], ids["<|endoftext|>"]  # Qwen's bos, pad and second eos are <|endoftext|>
    vocab = _padded(tokenizer.get_vocab_size())
    if repo_id == QWEN25:
        config = {
            "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": eos,
            "eos_token_id": eot, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
            "intermediate_size": 18944, "max_position_embeddings": 32768, "max_window_layers": 28,
            "model_type": "qwen2", "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 131072,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.43.1",
            "use_cache": True, "use_sliding_window": False, "vocab_size": 152064,
        }  # fmt: skip
        generation = {"bos_token_id": eos, "pad_token_id": eos, "do_sample": True, "eos_token_id": [eot, eos],
                      "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                      "transformers_version": "4.37.0"}  # fmt: skip
        shards = 4
    else:
        config = {
            "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
            "bos_token_id": eos, "eos_token_id": eot, "head_dim": 128, "hidden_act": "silu", "hidden_size": 4096,
            "initializer_range": 0.02, "intermediate_size": 12288, "max_position_embeddings": 40960,
            "max_window_layers": 36, "model_type": "qwen3", "num_attention_heads": 32, "num_hidden_layers": 36,
            "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
            "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "transformers_version": "4.51.0", "use_cache": True, "use_sliding_window": False,
            "vocab_size": 151936,
        }  # fmt: skip
        generation = {"bos_token_id": eos, "do_sample": True, "eos_token_id": [eot, eos], "pad_token_id": eos,
                      "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": "4.51.0"}  # fmt: skip
        shards = 5
    config.update(TINY, num_key_value_heads=2, vocab_size=vocab, max_window_layers=TINY["num_hidden_layers"])
    if "head_dim" in config:
        config["head_dim"] = 16
    _dump(directory / "config.json", config)
    _dump(directory / "generation_config.json", generation)
    _write_weights(directory, seed, torch.bfloat16, shards, safetensors=True)
    return directory


def write_qwen25(directory: Path, seed: int = 21) -> Path:
    return _write_qwen(Path(directory), QWEN25, seed)


def write_qwen3(directory: Path, seed: int = 23) -> Path:
    return _write_qwen(Path(directory), QWEN3, seed)


def write_llama31(directory: Path, seed: int = 22) -> Path:
    directory = Path(directory)
    specials = _llama3_specials()
    added = [(content, True) for content in specials]
    tokenizer = _bpe(LLAMA3_REGEX, nfc=False, llama_post=True, added=added, vocab_size=480, seed=seed)
    ids = {content: tokenizer.token_to_id(content) for content in specials}
    directory.mkdir(parents=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    bos, eot = "<|begin_of_text|>", "<|eot_id|>"
    _dump(directory / "tokenizer_config.json", {
        "added_tokens_decoder": _added_decoder(tokenizer, added),
        "bos_token": bos,
        "chat_template": chat_template(LLAMA31),
        "clean_up_tokenization_spaces": True,
        "eos_token": eot,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })  # fmt: skip
    special = {k: {key: value for key, value in _added(v, True).items() if key != "special"}
               for k, v in (("bos_token", bos), ("eos_token", eot))}  # fmt: skip
    _dump(directory / "special_tokens_map.json", special)
    eos_ids = [ids["<|end_of_text|>"], ids["<|eom_id|>"], ids[eot]]
    config = {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": ids[bos], "eos_token_id": eos_ids, "hidden_act": "silu", "hidden_size": 4096,
        "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
        "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
        "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
        "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
    }  # fmt: skip
    config.update(TINY, num_key_value_heads=2, vocab_size=tokenizer.get_vocab_size())
    _dump(directory / "config.json", config)
    _dump(directory / "generation_config.json", {
        "bos_token_id": ids[bos], "do_sample": True, "eos_token_id": eos_ids, "temperature": 0.6, "top_p": 0.9,
        "transformers_version": "4.42.3",
    })  # fmt: skip
    _write_weights(directory, seed, torch.bfloat16, 4, safetensors=True)
    return directory


def write_vicuna(directory: Path, seed: int = 24, vocab_size: int = 1000) -> Path:
    """lmsys/vicuna-7b-v1.5 at the revision LLaVA-1.5 trained from: SentencePiece, no chat template."""
    from sgeo.model.spm import train_sentencepiece

    directory = Path(directory)
    directory.mkdir(parents=True)
    (directory / "tokenizer.model").write_bytes(train_sentencepiece(vocab_size, seed))

    def token(content: str, typed: bool) -> dict:
        entry = {key: value for key, value in _added(content, False).items() if key != "special"}
        return {"__type": "AddedToken", **entry} if typed else entry

    # Key order and values as published (749 and 438 bytes).
    _dump(directory / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": token("<s>", True),
        "clean_up_tokenization_spaces": False, "eos_token": token("</s>", True), "legacy": False,
        "model_max_length": 4096, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer", "unk_token": token("<unk>", True),
    })  # fmt: skip
    _dump(directory / "special_tokens_map.json", {"bos_token": token("<s>", False), "eos_token": token("</s>", False),
                                                  "pad_token": "<unk>", "unk_token": token("<unk>", False)})  # fmt: skip
    config = {
        "_name_or_path": "vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"], "bos_token_id": 1,
        "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02,
        "intermediate_size": 11008, "max_position_embeddings": 4096, "model_type": "llama",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "pad_token_id": 0,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "tie_word_embeddings": False,
        "torch_dtype": "float16", "transformers_version": "4.31.0", "use_cache": True, "vocab_size": 32000,
    }  # fmt: skip
    config.update(TINY, num_key_value_heads=TINY["num_attention_heads"], vocab_size=vocab_size)
    _dump(directory / "config.json", config)
    _dump(directory / "generation_config.json", {
        "bos_token_id": 1, "eos_token_id": 2, "max_length": 4096, "pad_token_id": 0, "temperature": 0.9,
        "top_p": 0.6, "transformers_version": "4.31.0",
    })  # fmt: skip
    _write_weights(directory, seed, torch.float16, 2, safetensors=False)
    return directory


WRITERS = {QWEN25: write_qwen25, LLAMA31: write_llama31, QWEN3: write_qwen3, VICUNA: write_vicuna}


def write_layout(repo_id: str, directory: Path) -> Path:
    return WRITERS[repo_id](Path(directory))


def write_all(root: Path) -> dict[str, Path]:
    """Every stand-in under `root`, in a folder named as the repository."""
    return {repo_id: write(Path(root) / repo_id.split("/")[1]) for repo_id, write in WRITERS.items()}
