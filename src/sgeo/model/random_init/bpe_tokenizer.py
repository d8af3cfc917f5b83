"""The random-init presets' byte-level BPE tokenizer, trained deterministically on a small frozen corpus."""

from __future__ import annotations

from ..conversation import IMAGE_TOKEN

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


def train_bpe_tokenizer(vocab_size: int = 1024):
    """A Llama-style (<unk>, <s>, </s>) byte-level BPE tokenizer with `<image>`, trained deterministically."""
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
