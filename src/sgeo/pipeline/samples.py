"""Checking LLaVA-format training samples before the first step, as LLaVA-1.5 would read them.

`check_sample` returns the sample to train (LLaVA's silent fixes applied: a first turn that is not from the
human is dropped, as `preprocess_v1` does) or the reason it cannot be trained at all (a turn that is not an
object, a value that is not text, an unknown speaker, turns that do not alternate, `<image>` tokens that do not
match the sample's image). Also LLaVA's: several `<image>` in one turn become one at its front
(`preprocess_multimodal`), and a sample whose remaining text has no `<image>` trains its text without the
image (LLaVA encodes the image and places it nowhere). The trainer refuses a file with such samples before it
starts, naming the first few, instead of failing at step N.
"""

from __future__ import annotations

from dataclasses import dataclass

from sgeo.model.conversation import IMAGE_TOKEN, SPEAKERS, image_turn, turn_order_problem


@dataclass(frozen=True)
class Checked:
    sample: dict | None  # what trains (None when it cannot)
    fix: str | None = None  # what LLaVA silently changed, for the counts
    problem: str | None = None  # why it cannot train


def sample_problem(sample) -> str | None:
    """Why `sample` is not a LLaVA-format sample at all (not an object with a 'conversations' list, or an
    'image' that is not a path), or None. Dataset readers refuse a file on it; `check_sample` starts with it."""
    if not isinstance(sample, dict) or not isinstance(sample.get("conversations"), list):
        return "has no 'conversations' list"
    if "image" in sample and not isinstance(sample["image"], str):
        return f"has a non-string 'image' field {sample['image']!r}"
    return None


def _turn_problem(i: int, turn) -> str | None:
    if not isinstance(turn, dict):
        return f"turn {i} is a {type(turn).__name__}, not an object with 'from' and 'value'"
    if turn.get("from") not in SPEAKERS:
        return f"turn {i} is from {turn.get('from')!r}; LLaVA knows only 'human' and 'gpt'"
    if not isinstance(turn.get("value"), str):
        return f"turn {i} has a 'value' of type {type(turn.get('value')).__name__}, not text"
    return None


def check_sample(sample, *, needs_image: bool = False, plain: bool = False) -> Checked:
    """One sample -> Checked. `needs_image`/`plain`: the `plain` template (stage 1) takes one image and one
    caption; a text-only sample there is skipped (fix "no_image"), not an error."""
    problem = sample_problem(sample)
    if problem:
        return Checked(None, problem=problem)
    turns = sample["conversations"]
    for i, turn in enumerate(turns):
        problem = _turn_problem(i, turn)
        if problem:
            return Checked(None, problem=problem)
    fix = None
    if turns and turns[0]["from"] != "human":
        turns, fix = turns[1:], "first_turn_not_human"  # LLaVA's preprocess_v1: "Skip the first one"
    if not turns:
        return Checked(None, problem="has no turns")
    for i, turn in enumerate(turns):
        if problem := turn_order_problem(i, turn["from"]):
            return Checked(None, problem=problem)
    images = sum(turn["value"].count(IMAGE_TOKEN) for turn in turns)
    has_image = "image" in sample
    if not has_image:
        if images:
            # LLaVA would train the characters "<image>" as text; here <image> is the image's placeholder
            return Checked(None, problem=f"has {images} {IMAGE_TOKEN} in its text but no 'image' field")
        if needs_image:
            return Checked(None, fix="no_image")
    elif images == 0:
        if plain:  # LLaVA's preprocess_plain asserts the caption pair shows the image
            return Checked(None, problem=f"has an image but no {IMAGE_TOKEN} in its text")
        # LLaVA encodes the image and places it nowhere (its features are cut to [0:0] for a sample with no
        # image token): the text trains alone, as here without the image
        sample = {k: v for k, v in sample.items() if k != "image"}
        return Checked({**sample, "conversations": turns}, fix=fix or "image_without_token")
    else:
        with_image = [i for i, turn in enumerate(turns) if IMAGE_TOKEN in turn["value"]]
        if len(with_image) > 1:
            # LLaVA would give each such turn an image of its own (the next sample's): nothing sane to train
            return Checked(
                None,
                problem=f"has one image but {IMAGE_TOKEN} in {len(with_image)} turns "
                f"({', '.join(map(str, with_image))}); put it in one turn",
            )
        if images > 1:
            # LLaVA's preprocess_multimodal: every <image> of the turn taken out, one put at its front
            k = with_image[0]
            merged = image_turn(turns[k]["value"].replace(IMAGE_TOKEN, "").strip()).strip()
            turns = [*turns[:k], {**turns[k], "value": merged}, *turns[k + 1 :]]
            fix = fix or "image_tokens_merged"
    if plain and len(turns) != 2:
        return Checked(
            None, problem=f"the plain template takes one (image, caption) pair, not {len(turns)} turns"
        )
    cleaned = sample if fix is None else {**sample, "conversations": turns}
    return Checked(cleaned, fix=fix)
