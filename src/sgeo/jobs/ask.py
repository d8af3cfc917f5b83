"""`sgeo ask`: answer questions about one image, recomputing its features with the model's own towers.

One question streams its answer token by token (a transformers `TextStreamer`); without a question, an
interactive loop like LLaVA's CLI keeps the conversation (the image is in the first turn only, and is encoded
once). `--json` prints one object instead of streaming. 4/8-bit loading needs bitsandbytes and a GPU.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..cli_options import MODEL_HELP, option
from ..errors import SgeoError
from ..inference.image_chat import ImageChat
from ..inference.loading import DEVICE_HELP, PRECISION_HELP, load_for_inference
from ..inference.options import (
    MAX_NEW_TOKENS,
    TEMPERATURE,
    check_fits_context,
    check_max_new_tokens,
    check_temperature,
)
from ..model.conversation import clean_text


@dataclass
class AskConfig:
    """The `sgeo ask` options: each field is one (`sgeo.cli_options`)."""

    image: Path = option(help="an image file", argument=True)
    question: str | None = option(None, help="the question; omit for an interactive session", argument=True)
    model: str = option("tiny", help=MODEL_HELP)
    temperature: float = TEMPERATURE
    max_new_tokens: int = MAX_NEW_TOKENS
    as_json: bool = option(False, help="print one JSON object instead of streaming", flags=("--json",))
    load_4bit: bool = option(False, flags=("--load-4bit",))
    load_8bit: bool = option(False, flags=("--load-8bit",))
    device: str | None = option(None, help=DEVICE_HELP)
    precision: str | None = option(None, help=PRECISION_HELP)  # None: sgeo.precision.default_precision
    system: str | None = option(  # replaces the template's system message (a chat template's default one)
        None, help="the system message (default: the model's template's own)"
    )


def run_ask(config: AskConfig) -> dict | None:
    """Answer `config.question` (or questions read from stdin) about `config.image`."""
    from ..pipeline.images import load_image

    image, _ = load_image(config.image)  # a missing or broken image fails before any model loads
    check_max_new_tokens(config.max_new_tokens)
    check_temperature(config.temperature)
    if config.as_json and config.question is None:
        raise SgeoError("--json needs a QUESTION argument (the interactive session streams)")
    if config.question is not None and not clean_text(config.question):
        raise SgeoError(
            "QUESTION is empty once <image> is taken out (the image is placed for you); ask in words"
        )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars would mix with the answer
    model, processor = load_for_inference(
        config.model, config.device, config.load_4bit, config.load_8bit, config.precision
    )
    check_fits_context(config.max_new_tokens, model, processor)
    chat = ImageChat(model, processor, image, system=config.system)
    if config.question is not None:
        streamer = None if config.as_json else _streamer(processor)
        result = chat.ask(config.question, config.temperature, config.max_new_tokens, streamer)
        result = {"answer": result["answer"], "model": config.model, "tokens": result["tokens"],
                  "seconds": round(result["seconds"], 3)}  # fmt: skip
        if config.as_json:
            print(json.dumps(result))
        return result
    _interactive(chat, processor, config)
    return None


def _streamer(processor):
    from transformers import TextStreamer

    return TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)


def _interactive(chat: ImageChat, processor, config: AskConfig) -> None:
    """LLaVA's CLI loop: `USER: ` prompts (the template's roles; a chat template's are user and assistant)
    until an empty line or end of input."""
    user, assistant = getattr(chat.template, "roles", ("user", "assistant"))
    while True:
        try:
            question = input(f"{user}: ")
        except EOFError:
            print(file=sys.stdout)
            return
        if not question.strip():
            return
        if not clean_text(question):
            print("(the image is already in the conversation; ask in words)", flush=True)
            continue
        print(f"{assistant}: ", end="", flush=True)
        chat.ask(question.strip(), config.temperature, config.max_new_tokens, _streamer(processor))
