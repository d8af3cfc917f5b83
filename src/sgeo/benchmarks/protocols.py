"""How a benchmark item is asked: the prompt (system prompt, human turn, images) and the decoding.

Two protocols, named in `PROTOCOLS`; each benchmark's record (`registry.Benchmark`) says which it has, builds
its prompts and gives each protocol's decoding (`registry.build_prompt` / `registry.decoding_for` ask it: this
module is below the registry and the benchmark modules, and looks no record up):

- `reference`: the benchmark's own evaluation code (or, where its authors ship none for a LLaVA-1.5-class
  model, the standard harness's), byte for byte: system prompt, human turn, images, decoding. Each benchmark
  module names the code it follows.
- `sgeo`: sgeo's own greedy prompts: `BenchItem.prompt` (question + answer-format instruction) after the
  images, the template's system prompt, 64 new tokens.

Most benchmarks differ only in the reference's prompt and answer length: `reference_or_sgeo` builds a
benchmark's prompts from its reference prompt alone, `suffix_prompt` / `verbatim_prompt` are the common
reference prompts, and `greedy_protocols` the common decodings.

`MULTI_IMAGE` says what a model gets from an item with several images: `all` (each image its own `<image>`,
what SpatialScore's code gives LLaVA-1.5: one `{'type': 'image'}` per image in its `llava1_5-13b` branch of
`generate_response`, and what lmms-eval gives BLINK), `tile` (the images pasted into one grid canvas, one
`<image>`) or `first`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from sgeo.errors import SgeoError
from sgeo.model.conversation import IMAGE_TOKEN, image_turn

from .common import BenchItem

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


GREEDY_SGEO = Decoding(max_new_tokens=64)  # the sgeo protocol's, for every benchmark


def greedy_protocols(max_new_tokens: int) -> dict[str, Decoding]:
    """A benchmark's decodings when its reference decodes greedily (every published benchmark but
    SpatialRGPT-Bench): the reference's up to `max_new_tokens`, and the sgeo protocol's."""
    return {"reference": Decoding(max_new_tokens=max_new_tokens), "sgeo": GREEDY_SGEO}


@dataclass(frozen=True)
class Prompt:
    """What the model is asked for one item."""

    system: str | None  # the system prompt; None: the chat template's own
    human: str  # the human turn, with one "<image>" per image it shows
    images: tuple[str, ...]  # image files, relative to the image root, in order
    tile: bool = False  # paste `images` into one canvas, shown by the turn's single "<image>"
    upscale_tiny: bool = False  # SpatialScore's rule: an image 3 px or less on a side becomes 32 x 32


def check_multi_image(mode: str) -> str:
    if mode not in MULTI_IMAGE:
        raise SgeoError(f"unknown --multi-image {mode!r}; known: {', '.join(MULTI_IMAGE)}")
    return mode


def sgeo_text(item: BenchItem, format_hint: bool) -> str:
    """The sgeo protocol's question: `BenchItem.prompt`, or without its answer-format line."""
    return item.prompt if format_hint else item.extra.get("question", item.prompt)


def shown_images(item: BenchItem, multi_image: str) -> tuple[tuple[str, ...], int, bool]:
    """(image files, number of "<image>" in the turn, tiled?) for an item that may have several images."""
    images = tuple(item.images)
    if len(images) == 1 or check_multi_image(multi_image) == "all":
        return images, len(images), False
    if multi_image == "first":
        return images[:1], 1, False
    return images, 1, True


def llava_turn(item: BenchItem, text: str, multi_image: str = "all", system: str | None = None) -> Prompt:
    """LLaVA-1.5's own question format (`llava/eval/model_vqa_loader.py`): one "<image>\\n" per image shown,
    then the text, in the vicuna_v1 template (its system prompt unless `system` is given)."""
    images, n, tile = shown_images(item, multi_image)
    return Prompt(system, image_turn(text, n), images, tile)


def sgeo_prompt(item: BenchItem, multi_image: str, format_hint: bool) -> Prompt:
    """The sgeo protocol's prompt for any benchmark: the images, then `BenchItem.prompt`."""
    return llava_turn(item, sgeo_text(item, format_hint), multi_image)


PromptBuilder = Callable[[BenchItem, str, str, bool], Prompt]  # (item, protocol, multi_image, format_hint)


def reference_or_sgeo(reference: Callable[[BenchItem, str], Prompt]) -> PromptBuilder:
    """A benchmark's prompt builder: `reference(item, multi_image)` under the reference protocol, the sgeo
    protocol's prompt (`sgeo_prompt`) as for any benchmark under sgeo."""

    def prompt(item: BenchItem, protocol: str, multi_image: str, format_hint: bool) -> Prompt:
        if protocol == "sgeo":
            return sgeo_prompt(item, multi_image, format_hint)
        return reference(item, multi_image)

    return prompt


def suffix_prompt(suffix: str) -> PromptBuilder:
    """A benchmark whose reference protocol asks the published question, then `suffix` on a line of its own
    (LLaVA's question format: the images first)."""
    return reference_or_sgeo(lambda item, _: llava_turn(item, f"{item.raw_question}\n{suffix}"))


# A benchmark whose reference protocol asks the published question as it is (LLaVA's question format)
verbatim_prompt = reference_or_sgeo(lambda item, _: llava_turn(item, item.raw_question or ""))


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
