"""LLaVA-1.5's own tokenization of a prompt with images, and its labels, reproduced exactly.

Released LLaVA / SpatialGeo weights were trained on these ids, so models imported from those checkpoints
tokenize this way (`tokenization="llava"`), with the slow SentencePiece tokenizer LLaVA ran (`SlowLlamaText`,
whatever transformers is installed): `tokenizer_image_token` tokenizes the text around each `<image>`
separately (each chunk as its own sentence, so with Llama's SentencePiece the text after an image starts with
the word-start piece '▁'), and `preprocess_plain` / `preprocess_v1` mask the labels by re-tokenizing each round,
quirks included: a round whose lengths do not add up has all its labels ignored, as LLaVA does (it prints
"tokenization mismatch"). Source: haotian-liu/LLaVA, `llava/mm_utils.py` and `llava/train/train.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

from .conversation import IGNORE_INDEX, IMAGE_TOKEN, Template

IMAGE_INDEX = -200  # LLaVA's IMAGE_TOKEN_INDEX: a placeholder id that no tokenizer produces
SPIECE_UNDERLINE = "\u2581"
SPM_FILE = "tokenizer.model"


class SlowLlamaText:
    """`tokenizer(text).input_ids` of the tokenizer LLaVA-1.5 trained with: transformers 4.37's slow
    `LlamaTokenizer` (`legacy: false`) over the SentencePiece model itself, written out here so that the ids do
    not depend on the installed transformers (whose tokenizers-backed Llama reads " ASSISTANT:" as one
    word-start piece where the slow one, which prepends '▁' to the text, gives two: '▁' '▁ASSISTANT').

    The rule (4.37.2 `LlamaTokenizer.tokenize` / `_tokenize`, `PreTrainedTokenizer.tokenize`): the text gets
    a '▁' in front (its own '▁' become spaces) and is split at the special tokens (kept whole, never
    stripped); each other piece is SentencePiece-encoded without the dummy prefix, a piece starting with '▁'
    or ' ' behind "<unk>" (whose pieces are then dropped) so its first space stays a word start; a leading
    lone '▁' before a special token is dropped; BOS in front. `legacy: true`: plain SentencePiece (dummy
    prefix on) on each piece between special tokens.
    """

    def __init__(self, model_proto: bytes, tokenizer):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        self.legacy = bool(getattr(tokenizer, "legacy", tokenizer.init_kwargs.get("legacy", True)))
        self.model_proto = model_proto  # as read: what a saved processor writes back as tokenizer.model
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(model_proto)
        if not self.legacy:  # 4.37's get_spm_processor: the prefix is the tokenizer's own '▁'
            proto.normalizer_spec.add_dummy_prefix = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.bos_token_id = tokenizer.bos_token_id
        self.unk_token = str(tokenizer.unk_token or "<unk>")
        self.unk_length = len(self.sp.encode(self.unk_token, out_type=str))
        # the slow tokenizer's added tokens (<unk>, <s>, </s>, and sgeo's <image>): matched whole, longest first
        self.added = {str(token): int(i) for token, i in tokenizer.get_added_vocab().items()}
        self.special = set(tokenizer.all_special_tokens) | set(self.added)
        names = sorted(self.added, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None

    @classmethod
    def for_tokenizer(cls, tokenizer, directory: str | Path | None = None) -> SlowLlamaText | None:
        """The rule over the tokenizer's SentencePiece model (`tokenizer.model` where it was loaded from, or in
        `directory`); None when there is none to read."""
        for candidate in (
            getattr(tokenizer, "vocab_file", None),
            tokenizer.init_kwargs.get("vocab_file"),
            Path(directory) / SPM_FILE if directory else None,
            Path(str(tokenizer.name_or_path)) / SPM_FILE if tokenizer.name_or_path else None,
        ):
            if candidate and Path(candidate).is_file():
                from google.protobuf.message import DecodeError

                from ..errors import SgeoError, one_line

                try:
                    return cls(Path(candidate).read_bytes(), tokenizer)
                except (OSError, RuntimeError, ValueError, DecodeError) as error:
                    detail = one_line(str(error), 200)
                    raise SgeoError(f"cannot read the SentencePiece model {candidate}: {detail}") from None
        return None

    def _pieces(self, text: str) -> list[str]:
        if self.legacy:
            return self.sp.encode(text, out_type=str)
        if not text.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp.encode(text, out_type=str)
        pieces = self.sp.encode(self.unk_token + text, out_type=str)
        return pieces[self.unk_length :] if len(pieces) >= self.unk_length else pieces

    def tokenize(self, text: str) -> list[str]:
        if not text:
            return []
        if not self.legacy:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        tokens: list[str] = []
        for part in self._split.split(text) if self._split else [text]:
            if part in self.added:
                tokens.append(part)
            elif part:
                tokens.extend(self._pieces(part))
        if (
            not self.legacy
            and len(tokens) > 1
            and tokens[0] == SPIECE_UNDERLINE
            and tokens[1] in self.special
        ):
            tokens = tokens[1:]
        return tokens

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        ids = [self.bos_token_id] + [
            self.added[t] if t in self.added else self.sp.piece_to_id(t) for t in self.tokenize(text)
        ]
        return ids[:max_length] if max_length else ids


def _ids(text: str, tokenizer) -> list[int]:
    """`tokenizer(text).input_ids`, through the slow rule where it is given (a SlowLlamaText)."""
    return tokenizer.encode(text) if isinstance(tokenizer, SlowLlamaText) else tokenizer(text).input_ids


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """Ids of `prompt` with IMAGE_INDEX for each `<image>`: chunks tokenized apart, one BOS at the front."""
    chunks = [_ids(chunk, tokenizer) for chunk in prompt.split(IMAGE_TOKEN)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    separator = [IMAGE_INDEX] * (offset + 1)
    for i, chunk in enumerate(chunks):
        if i:
            ids.extend(separator[offset:])  # LLaVA slices the separator like the chunks: one image id stays
        ids.extend(chunk[offset:])
    return ids


def _legacy_adjustment(tokenizer) -> bool:
    # LLaVA: `if i != 0 and not tokenizer.legacy and IS_TOKENIZER_GREATER_THAN_0_14` (tokenizers >= 0.14 here)
    if isinstance(tokenizer, SlowLlamaText):
        return not tokenizer.legacy
    return not getattr(tokenizer, "legacy", tokenizer.init_kwargs.get("legacy", True))


def _length(text: str, tokenizer, has_image: bool) -> int:
    return len(tokenizer_image_token(text, tokenizer)) if has_image else len(_ids(text, tokenizer))


def plain_labels(prompt: str, tokenizer) -> tuple[list[int], list[int]]:
    """LLaVA's preprocess_plain on "<image>" + caption + "\\n": the image and the BOS are not supervised."""
    ids = tokenizer_image_token(prompt, tokenizer)
    labels = list(ids)
    head = len(tokenizer_image_token(IMAGE_TOKEN, tokenizer))
    labels[:head] = [IGNORE_INDEX] * min(head, len(labels))
    return ids, labels


def v1_labels(prompt: str, template: Template, tokenizer, has_image: bool, max_length: int, pad_id: int):
    """LLaVA's preprocess_v1 (SeparatorStyle.TWO): ids and labels of a rendered conversation. `pad_id`: the
    tokenizer's pad id (LLaVA's is `<unk>`): LLaVA counts the non-pad tokens to check the rounds."""
    if has_image:
        ids = tokenizer_image_token(prompt, tokenizer)
    elif isinstance(tokenizer, SlowLlamaText):
        ids = tokenizer.encode(prompt, max_length=max_length)
    else:
        ids = tokenizer(prompt, max_length=max_length, truncation=True).input_ids
    labels = list(ids)
    total = sum(1 for t in labels if t != pad_id)
    sep = template.sep + template.roles[1] + ": "
    current = 1
    labels[:current] = [IGNORE_INDEX] * current
    for i, round_text in enumerate(prompt.split(template.sep2)):
        if round_text == "":
            break
        parts = round_text.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = _length(round_text, tokenizer, has_image)
        instruction_len = _length(parts[0], tokenizer, has_image) - 2
        if i != 0 and _legacy_adjustment(tokenizer):
            round_len -= 1
            instruction_len -= 1
        labels[current : current + instruction_len] = [IGNORE_INDEX] * len(
            labels[current : current + instruction_len]
        )
        current += round_len
    labels[current:] = [IGNORE_INDEX] * len(labels[current:])
    if current < max_length and current != total:
        labels = [IGNORE_INDEX] * len(labels)  # LLaVA: "tokenization mismatch ... (ignored)"
    return ids, labels
