"""LLaVA-1.5's own tokenization of a prompt with images, and its labels, reproduced exactly.

Released LLaVA / SpatialGeo weights were trained on these ids, so models imported from those checkpoints
tokenize this way (`tokenization="llava"`): `tokenizer_image_token` tokenizes the text around each `<image>`
separately (each chunk as its own sentence, so with Llama's SentencePiece the text after an image starts with
the word-start piece '▁'), and `preprocess_plain` / `preprocess_v1` mask the labels by re-tokenizing each round,
quirks included: a round whose lengths do not add up has all its labels ignored, as LLaVA does (it prints
"tokenization mismatch"). Source: haotian-liu/LLaVA, `llava/mm_utils.py` and `llava/train/train.py`.
"""

from __future__ import annotations

from .conversation import IGNORE_INDEX, IMAGE_TOKEN, Template

IMAGE_INDEX = -200  # LLaVA's IMAGE_TOKEN_INDEX: a placeholder id that no tokenizer produces


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """Ids of `prompt` with IMAGE_INDEX for each `<image>`: chunks tokenized apart, one BOS at the front."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(IMAGE_TOKEN)]
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
    return not getattr(tokenizer, "legacy", tokenizer.init_kwargs.get("legacy", True))


def _length(text: str, tokenizer, has_image: bool) -> int:
    return len(tokenizer_image_token(text, tokenizer)) if has_image else len(tokenizer(text).input_ids)


def plain_labels(prompt: str, tokenizer) -> tuple[list[int], list[int]]:
    """LLaVA's preprocess_plain on "<image>" + caption + "\\n": the image and the BOS are not supervised."""
    ids = tokenizer_image_token(prompt, tokenizer)
    labels = list(ids)
    head = len(tokenizer_image_token(IMAGE_TOKEN, tokenizer))
    labels[:head] = [IGNORE_INDEX] * min(head, len(labels))
    return ids, labels


def v1_labels(prompt: str, template: Template, tokenizer, has_image: bool, max_length: int):
    """LLaVA's preprocess_v1 (SeparatorStyle.TWO): ids and labels of a rendered conversation."""
    if has_image:
        ids = tokenizer_image_token(prompt, tokenizer)
    else:
        ids = tokenizer(prompt, max_length=max_length, truncation=True).input_ids
    labels = list(ids)
    pad_id = tokenizer.pad_token_id
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
