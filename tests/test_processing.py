"""Conversation templates and labels: exact LLaVA-1.5 strings, only assistant replies supervised."""

from __future__ import annotations

import pytest

from sgeo.model import IGNORE_INDEX, render
from sgeo.model.processing import SpatialGeoProcessor

VICUNA_SYSTEM = (  # LLaVA's conv_vicuna_v1 (`--version v1`), what LLaVA-1.5 and SpatialGeo finetune with
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (  # LLaVA's conv_llava_v1 (its CLI, SpatialGeo's eval_spatial.py)
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
TWO_TURNS = [
    {"from": "human", "value": "What is this?\n<image>"},
    {"from": "gpt", "value": "A red box."},
    {"from": "human", "value": "Is it left?"},
    {"from": "gpt", "value": "Yes."},
]


@pytest.fixture(scope="module")
def processor(tiny_dir) -> SpatialGeoProcessor:
    return SpatialGeoProcessor.from_pretrained(tiny_dir)


def test_vicuna_v1_prompt_is_llava_exact():
    text, spans = render("vicuna_v1", TWO_TURNS)
    assert text == (
        VICUNA_SYSTEM
        + " USER: <image>\nWhat is this? ASSISTANT: A red box.</s>USER: Is it left? ASSISTANT: Yes.</s>"
    )
    assert [text[a:b] for a, b in spans] == [" A red box.</s>", " Yes.</s>"]
    prompt, _ = render("vicuna_v1", TWO_TURNS[:1], add_generation_prompt=True)
    assert prompt.endswith("USER: <image>\nWhat is this? ASSISTANT:")
    assert render("llava_v1", TWO_TURNS)[0] == text.replace(VICUNA_SYSTEM, LLAVA_V1_SYSTEM)


def test_plain_prompt_is_image_then_caption():
    text, spans = render(
        "plain", [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "A box."}]
    )
    assert text == "<image>A box.\n"
    assert [text[a:b] for a, b in spans] == ["A box.\n"]


def _pairs(processor, tokens):
    names = processor.tokenizer.convert_ids_to_tokens(tokens["input_ids"])
    return [
        (n, label != IGNORE_INDEX) for n, label in zip(names, tokens["labels"], strict=True) if n != "<image>"
    ]


def test_vicuna_v1_labels_token_by_token(processor):
    tokens = processor.tokenize(TWO_TURNS, "vicuna_v1")
    pairs = _pairs(processor, tokens)
    supervised = [n for n, s in pairs if s]
    # The space after "ASSISTANT:" is its own token here: supervised, since generation starts at the colon.
    assert supervised == ["Ġ", "A", "Ġred", "Ġbox", ".", "</s>", "Ġ", "Y", "es", ".", "</s>"]
    # The tail, token by token: the second prompt is masked; its reply, leading space and </s> supervised.
    assert pairs[-16:] == [
        ("</s>", True),
        ("USER", False),
        (":", False),
        ("Ġ", False),
        ("I", False),
        ("s", False),
        ("Ġit", False),
        ("Ġleft", False),
        ("?", False),
        ("ĠASSISTANT", False),
        (":", False),
        ("Ġ", True),
        ("Y", True),
        ("es", True),
        (".", True),
        ("</s>", True),
    ]
    assert pairs[0] == ("<s>", False)
    assert not any(s for n, s in pairs[:40])  # system prompt, first question
    image_positions = [i for i, t in enumerate(tokens["input_ids"]) if t == processor.image_token_id]
    assert len(image_positions) == processor.num_image_tokens
    assert image_positions == list(range(image_positions[0], image_positions[0] + processor.num_image_tokens))
    assert all(tokens["labels"][i] == IGNORE_INDEX for i in image_positions)


def test_plain_labels_token_by_token(processor):
    caption = [
        {"from": "human", "value": "<image>\nDescribe."},
        {"from": "gpt", "value": "A red box on the left."},
    ]
    pairs = _pairs(processor, processor.tokenize(caption, "plain"))
    assert pairs == [
        ("<s>", False),
        ("A", True),
        ("Ġred", True),
        ("Ġbox", True),
        ("Ġon", True),
        ("Ġthe", True),
        ("Ġleft", True),
        (".", True),
        ("Ċ", True),
    ]


def test_truncation_never_cuts_through_image_tokens(tiny_dir):
    short = SpatialGeoProcessor.from_pretrained(tiny_dir, model_max_length=100)
    with pytest.raises(ValueError, match="cut through an image"):
        short.tokenize(TWO_TURNS, "vicuna_v1")
    roomy = SpatialGeoProcessor.from_pretrained(tiny_dir, model_max_length=180)
    tokens = roomy.tokenize(TWO_TURNS, "vicuna_v1")
    assert len(tokens["input_ids"]) == 180
    assert tokens["input_ids"].count(roomy.image_token_id) == roomy.num_image_tokens
    # Edges: a cut right before the block would drop the whole image; a cut right after it keeps it all.
    first = tokens["input_ids"].index(roomy.image_token_id)
    end = first + roomy.num_image_tokens
    with pytest.raises(ValueError, match="cut through an image"):
        SpatialGeoProcessor.from_pretrained(tiny_dir, model_max_length=first).tokenize(TWO_TURNS, "vicuna_v1")
    exact = SpatialGeoProcessor.from_pretrained(tiny_dir, model_max_length=end).tokenize(
        TWO_TURNS, "vicuna_v1"
    )
    assert len(exact["input_ids"]) == end and exact["input_ids"][-1] == roomy.image_token_id


def test_turns_must_alternate():
    with pytest.raises(ValueError, match="alternate"):
        render("vicuna_v1", [{"from": "gpt", "value": "hi"}])


def test_pad_image_to_square_with_mean_colour(processor):
    from PIL import Image

    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    pixels = processor.preprocess_images([wide])
    assert pixels.shape == (1, 3, 112, 112)
    # Top rows are padding: the CLIP mean colour normalises to ~0.
    assert pixels[0, :, 0, :].abs().max() < 0.02
    assert pixels[0, 0, 56, 56] > 1.0  # red centre
