"""What the trainer checks of the joined samples before the first step, with the real tokenizer: images that
would fall past the length cut (refused), samples whose labels are all ignored (a warning)."""

from __future__ import annotations

from sgeo.model.conversation import IGNORE_INDEX, IMAGE_TOKEN
from sgeo.pipeline.training.join import JoinResult


def images_past_the_cut(join: JoinResult, processor, template: str) -> list[tuple[int, str]]:
    """(position in `join.samples`, why) of the samples whose `<image>` would fall after `model_max_length`
    (they cannot train; LLaVA would crash).

    Cheap: a token covers at least one UTF-8 byte, so the text before the image has at most that many tokens
    (plus BOS and a word-start piece); only samples over that bound are tokenized exactly."""
    from sgeo.model.conversation import render

    limit, width = processor.model_max_length, processor.num_image_tokens
    found = []
    for i, (sample, row) in enumerate(zip(join.samples, join.rows, strict=True)):
        if row < 0:
            continue
        text, _ = render(template, sample["conversations"])
        if len(text[: text.index(IMAGE_TOKEN)].encode()) + 2 + width <= limit:
            continue
        try:
            processor.tokenize(sample["conversations"], template)
        except ValueError as error:
            found.append((i, str(error)))
    return found


def unsupervised_samples(join: JoinResult, processor, template: str, limit: int = 256):
    """(ids, checked) of the samples among the first `limit` whose labels are all ignored (an early warning
    that the tokenizer and the template disagree); None when every checked sample trains."""
    found, checked = [], 0
    for i, sample in enumerate(join.samples[:limit]):
        if not any(turn["value"].strip() for turn in sample["conversations"][1::2]):
            continue  # nothing to supervise in the first place
        checked += 1
        try:
            labels = processor.tokenize(sample["conversations"], template)["labels"]
        except ValueError:
            continue  # reported by images_past_the_cut
        if all(label == IGNORE_INDEX for label in labels):
            found.append(join.name(i))
    return (found, checked) if found else None
