"""A Llama-style SentencePiece tokenizer, trained deterministically, saved as LLaVA-1.5 ships its tokenizer.

`liuhaotian/llava-v1.5-7b` carries `tokenizer.model` (SentencePiece BPE: byte fallback, split digits, a dummy
word-start prefix, `<unk>`/`<s>`/`</s>` at ids 0/1/2, no pad piece), a `tokenizer_config.json` naming
`LlamaTokenizer` (`legacy: false`, `model_max_length: 2048`, no pad token) and a `special_tokens_map.json`
(pad = `<unk>`), and no `tokenizer.json`. Random-init presets and the reference-layout test fixtures write the
same files, so the tokenizer loads through the same converter as the real one.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

_WORDS = (
    "the a an of to in on at is are was be and or not no yes with from by for as it this that there what which "
    "how far tall wide big small left right above below front behind closer farther taller shorter wider "
    "thinner bigger smaller larger height width distance depth meter meters centimeters feet inches about "
    "object objects box sphere cylinder cube red green blue yellow purple orange white black gray pink brown "
    "image picture photo scene camera describe briefly many count clock direction answer question chat "
    "between curious human artificial intelligence assistant gives helpful detailed polite answers questions"
)


def _corpus(vocab_size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = _WORDS.split()
    letters = "abcdefghijklmnopqrstuvwxyz"
    # Enough distinct pseudo-words that BPE can reach `vocab_size` pieces.
    filler = [
        "".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(vocab_size + 2000)
    ]
    lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(4000)]
    # Like Llama's vocabulary, "USER" right after "</s>" is one piece and "▁USER" is not: alone, a later round
    # then tokenizes one longer than in its conversation, which LLaVA's preprocess_v1 corrects (legacy=false).
    lines += [f"{rng.choice(words)}.</s>USER: {rng.choice(words)}? ASSISTANT: {rng.choice(words)}.</s>USER:"
              for _ in range(2000)]  # fmt: skip
    lines += [" ".join(rng.choice(filler) for _ in range(16)) for _ in range(max(2000, vocab_size))]
    lines += [" ".join(f"{i / 10:.1f} {i}" for i in range(k, k + 20)) for k in range(0, 400, 20)]
    return lines


def train_sentencepiece(vocab_size: int, seed: int = 0) -> bytes:
    """The serialized model of a Llama-like SentencePiece BPE with exactly `vocab_size` pieces."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus(vocab_size, seed)), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, num_threads=1, minloglevel=2,
        input_sentence_size=0, shuffle_input_sentence=False,
    )  # fmt: skip
    return model.getvalue()


def _added(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def write_llama_tokenizer(directory: str | Path, vocab_size: int = 32000, seed: int = 0) -> Path:
    """Write tokenizer.model, tokenizer_config.json and special_tokens_map.json as LLaVA-1.5 ships them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(train_sentencepiece(vocab_size, seed))
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": {"__type": "AddedToken", **_added("<s>")},
        "clean_up_tokenization_spaces": False,
        "eos_token": {"__type": "AddedToken", **_added("</s>")},
        "legacy": False,
        "model_max_length": 2048,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": {"__type": "AddedToken", **_added("<unk>")},
    }
    special = {
        "bos_token": _added("<s>"),
        "eos_token": _added("</s>"),
        "pad_token": "<unk>",
        "unk_token": _added("<unk>"),
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return directory
