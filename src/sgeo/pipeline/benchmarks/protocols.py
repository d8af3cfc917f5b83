"""How a benchmark item is asked: the prompt (system prompt, human turn, images) and the decoding.

Two protocols, registered by name in `PROTOCOLS`:

- `reference`: the benchmark's own evaluation code. SpatialRGPT-Bench as SpatialGeo's
  `SpatialGeo/llava/eval/benchmark/eval_spatial.py`: LLaVA's `llava_v1` system prompt with the answer-format
  hint glued on, the human turn verbatim, sampling at temperature 0.2 (top_p None, so transformers' top_k 50
  stays), 128 new tokens. SpatialScore as `version_0/test_all-in-one.py` does for LLaVA-1.5 (`llava1_5-13b`):
  the llava-hf chat template over [assistant: the source's instruction, user: one image entry per image +
  the question], which renders "ASSISTANT: {instruction} USER: <image>\\n...<image>\\n{question} ASSISTANT:",
  greedy (their TEMPERATURE 0.0), 1024 new tokens.
- `sgeo`: sgeo's own greedy prompts: `BenchItem.prompt` (question + answer-format instruction) after the
  images, the template's system prompt, 64 new tokens.

`MULTI_IMAGE` says what a model gets from an item with several images: `all` (each image its own `<image>`,
what SpatialScore's code gives LLaVA-1.5: one `{'type': 'image'}` per image in its `llava1_5-13b` branch of
`generate_response`), `tile` (the images pasted into one grid canvas, one `<image>`) or `first`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from sgeo.errors import SgeoError
from sgeo.model.conversation import IMAGE_TOKEN

from .common import BenchItem
from .spatialrgpt import LLAVA_V1_SYSTEM, answer_suffix
from .spatialscore import source_instruction

PROTOCOLS = ("reference", "sgeo")
MULTI_IMAGE = ("all", "tile", "first")
IMAGE = IMAGE_TOKEN


@dataclass(frozen=True)
class Decoding:
    """Greedy, or sampling at `temperature` among the `top_k` likeliest tokens (0: all)."""

    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64


@dataclass(frozen=True)
class Prompt:
    """What the model is asked for one item."""

    system: str | None  # the system prompt; None: the chat template's own
    human: str  # the human turn, with one "<image>" per image it shows
    images: tuple[str, ...]  # image files, relative to the image root, in order
    tile: bool = False  # paste `images` into one canvas, shown by the turn's single "<image>"
    upscale_tiny: bool = False  # SpatialScore's rule: an image 3 px or less on a side becomes 32 x 32


def default_protocol(bench: str) -> str:
    """`reference` for the published benchmarks; `sgeo` for our synthetic one, which has no other."""
    return "sgeo" if bench == "synthetic" else "reference"


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise SgeoError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return protocol


def check_multi_image(mode: str) -> str:
    if mode not in MULTI_IMAGE:
        raise SgeoError(f"unknown --multi-image {mode!r}; known: {', '.join(MULTI_IMAGE)}")
    return mode


def decoding_for(bench: str, protocol: str, max_new_tokens: int | None = None) -> Decoding:
    """The decoding a protocol uses for a benchmark; `max_new_tokens` overrides its length."""
    if check_protocol(protocol) == "sgeo":
        decoding = Decoding(max_new_tokens=64)
    elif bench == "spatialscore":
        decoding = Decoding(max_new_tokens=1024)  # test_all-in-one.py `generate_response`
    else:  # eval_spatial.py: --temperature 0.2, --top_p None, max_new_tokens=128
        decoding = Decoding(sample=True, temperature=0.2, top_k=50, max_new_tokens=128)
    if max_new_tokens is None:
        return decoding
    return Decoding(decoding.sample, decoding.temperature, decoding.top_k, max_new_tokens)


def _shown(item: BenchItem, multi_image: str) -> tuple[tuple[str, ...], int, bool]:
    """(image files, number of "<image>" in the turn, tiled?) for a SpatialScore item."""
    images = tuple(item.images)
    if len(images) == 1 or check_multi_image(multi_image) == "all":
        return images, len(images), False
    if multi_image == "first":
        return images[:1], 1, False
    return images, 1, True


def build_prompt(
    item: BenchItem, bench: str, protocol: str, multi_image: str = "all", format_hint: bool = True
) -> Prompt:
    """The prompt `protocol` gives `item` of `bench`; `format_hint` False drops sgeo's answer-format line."""
    sgeo_text = item.prompt if format_hint else item.extra.get("question", item.prompt)
    if bench == "spatialscore":
        images, n, tile = _shown(item, multi_image)
        if check_protocol(protocol) == "sgeo":
            return Prompt(None, f"{IMAGE}\n" * n + sgeo_text, images, tile, upscale_tiny=True)
        instruction = source_instruction(item.qa_info.get("source"), item.qa_info.get("type"))
        question = item.raw_question if item.raw_question is not None else sgeo_text
        return Prompt(f"ASSISTANT: {instruction}", f"{IMAGE}\n" * n + question, images, tile, True)
    if check_protocol(protocol) == "sgeo":
        return Prompt(None, f"{IMAGE}\n{sgeo_text}", (item.image,))
    human = item.raw_question if item.raw_question is not None else f"{IMAGE}\n{sgeo_text}"
    n = human.count(IMAGE)
    if n > 1:
        raise SgeoError(f"item {item.question_id}: its human turn has {n} {IMAGE} but the item one image")
    # A human turn without "<image>" gets no image, as in the reference (LLaVA drops an image it has no
    # token for); the eval says how many such items there are.
    return Prompt(LLAVA_V1_SYSTEM + answer_suffix(item.qa_info), human, (item.image,) * n)


def tile_images(images: list[Image.Image]) -> Image.Image:
    """The images on one canvas: a grid of ceil(sqrt(k)) columns, each cell the largest image's size, the
    images centred in their cells on black."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    cell_w, cell_h = max(im.width for im in images), max(im.height for im in images)
    canvas = Image.new("RGB", (cols * cell_w, rows * cell_h))
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        canvas.paste(
            im.convert("RGB"), (c * cell_w + (cell_w - im.width) // 2, r * cell_h + (cell_h - im.height) // 2)
        )
    return canvas


def model_images(prompt: Prompt, pictures: list[Image.Image]) -> list[Image.Image]:
    """The pictures of `prompt.images` as the model gets them: upscaled where tiny, tiled where asked."""
    if prompt.upscale_tiny:  # test_all-in-one.py `generate_response`, llava1_5-13b branch
        pictures = [p.resize((32, 32), Image.BICUBIC) if min(p.size) <= 3 else p for p in pictures]
    return [tile_images(pictures)] if prompt.tile else pictures
