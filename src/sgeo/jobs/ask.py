"""`sgeo ask`: answer questions about one image, recomputing its features with the model's own towers.

One question streams its answer token by token (a transformers `TextStreamer`); without a question, an
interactive loop like LLaVA's CLI keeps the conversation (the image is in the first turn only, and is encoded
once). `--json` prints one object instead of streaming. 4/8-bit loading needs bitsandbytes and a GPU.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..cli_options import MODEL_HELP, option
from ..errors import SgeoError
from ..model.conversation import clean_text, question_turn

# The model's own template (its processor_config.json's; LLaVA-1.5's vicuna_v1 for every LLaVA / SpatialGeo
# model): `processor.tokenize(turns, TEMPLATE)` and `processor.template()` resolve it.
TEMPLATE = None


# the default decoding of `sgeo ask` and `sgeo serve`
TEMPERATURE = 0.2
MAX_NEW_TOKENS = 256


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
    device: str | None = option(None, help="cpu or cuda (default: cuda when available)")
    precision: str | None = option(  # None: bf16 on GPU (fp16 without bf16), fp32 on CPU
        None, help="bf16, fp16 (GPU) or fp32 (default: bf16 on GPU, fp32 on CPU)"
    )
    system: str | None = option(  # replaces the template's system message (a chat template's default one)
        None, help="the system message (default: the model's template's own)"
    )


PRECISIONS = ("bf16", "fp16", "fp32")
MAX_TEMPERATURE = 2.0  # as serve's and OpenAI's API: past it, sampling is noise


def check_temperature(temperature: float) -> float:
    """`temperature` if it is from 0 (greedy) to 2; NaN and infinities fail the comparison and are refused too
    (NaN would otherwise read as "not above 0" and answer greedily)."""
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise SgeoError(f"--temperature must be from 0 (greedy) to {MAX_TEMPERATURE:g}, got {temperature}")
    return temperature


def context_length(model, processor) -> tuple[int, str]:
    """(tokens, what bounds them): the most tokens the model reads, prompt and answer together: the
    processor's `model_max_length`, or the LLM's `max_position_embeddings` where that is smaller."""
    limit, name = int(processor.model_max_length), "model_max_length"
    positions = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and 0 < positions < limit:
        limit, name = positions, "max_position_embeddings"
    return limit, name


def check_max_new_tokens(max_new_tokens: int, model, processor) -> None:
    """Refuse an answer length the model could never produce: more new tokens than its whole context."""
    limit, name = context_length(model, processor)
    if max_new_tokens > limit:
        raise SgeoError(
            f"--max-new-tokens {max_new_tokens} is more than the model's context of {limit} tokens ({name}); "
            f"pass at most {limit}"
        )


def pick_device(device: str | None = None, precision: str | None = None):
    """(device, dtype): cuda in bf16 (fp16 where bf16 is unsupported) when available, else cpu in fp32;
    `precision` (bf16, fp16, fp32) overrides the dtype on either."""
    import torch

    if precision not in (None, *PRECISIONS):
        raise SgeoError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise SgeoError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SgeoError(f"--device {device} was asked for but no CUDA GPU is visible; use --device cpu")
        default = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        if precision == "fp16":
            raise SgeoError("--precision fp16 needs a GPU (CPU kernels are bf16 or fp32); use bf16 on CPU")
        default = torch.float32
    named = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    return device, named[precision] if precision else default


def _quantize_language_model(model, bits: int, device: str) -> None:
    """Swap the LLM's linear layers (not lm_head) for bitsandbytes ones, as LLaVA's `--load-4bit/8bit` do.

    Done after loading rather than through `from_pretrained`, so it applies to every way a model loads
    (sgeo directories and reference checkpoints alike); the settings come from one `BitsAndBytesConfig`.
    """
    import torch
    from torch import nn
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes as bnb
    except ImportError:
        raise SgeoError("--load-4bit/--load-8bit need bitsandbytes: pip install 'sgeo[gpu]'") from None
    settings = BitsAndBytesConfig(
        load_in_4bit=bits == 4, load_in_8bit=bits == 8, bnb_4bit_compute_dtype=torch.float16,
        bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
    )  # fmt: skip
    llm = model.language_model
    for parent in list(llm.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or name == "lm_head":
                continue
            weight = child.weight.data.to("cpu", torch.float16)
            if bits == 4:
                layer = bnb.nn.Linear4bit(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    compute_dtype=settings.bnb_4bit_compute_dtype, quant_type=settings.bnb_4bit_quant_type,
                    compress_statistics=settings.bnb_4bit_use_double_quant,
                )  # fmt: skip
                layer.weight = bnb.nn.Params4bit(
                    weight, requires_grad=False, quant_type=settings.bnb_4bit_quant_type,
                    compress_statistics=settings.bnb_4bit_use_double_quant,
                )  # fmt: skip
            else:
                layer = bnb.nn.Linear8bitLt(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    has_fp16_weights=False, threshold=settings.llm_int8_threshold,
                )  # fmt: skip
                layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data.to(torch.float16), requires_grad=False)
            setattr(parent, name, layer)
    model.to(device)  # bitsandbytes quantizes the weights as they move to the GPU


def load_for_inference(
    model: str, device: str | None = None, load_4bit: bool = False, load_8bit: bool = False,
    precision: str | None = None,
):  # fmt: skip
    """(model, processor) on the chosen device, towers attached; optionally with a 4/8-bit LLM."""
    from ..model import load_model

    if load_4bit and load_8bit:
        raise SgeoError("choose one of --load-4bit and --load-8bit")
    bits = 4 if load_4bit else 8 if load_8bit else None
    if bits and precision:
        raise SgeoError(f"--load-{bits}bit computes in fp16; drop --precision")
    device, dtype = pick_device(device, precision)
    if bits is None:
        return load_model(model, dtype=dtype, device=device)
    if not device.startswith("cuda"):
        raise SgeoError(f"--load-{bits}bit needs a CUDA GPU (bitsandbytes); on {device}, drop the flag")
    import torch

    spatialgeo, processor = load_model(model, dtype=torch.float16, load_towers=False)
    _quantize_language_model(spatialgeo, bits, device)
    spatialgeo.load_towers()
    return spatialgeo, processor


class ImageChat:
    """A conversation about one image: the image is encoded once, its features reused on every turn."""

    def __init__(self, model, processor, image, template=TEMPLATE, system: str | None = None):
        # the model's own template unless another is named; `system` replaces its system message
        self.model, self.processor = model, processor
        self.template = processor.resolve_template(template, system)
        pixel_values = processor.preprocess_images([image])  # [1, 3, S, S]
        self.image_features = model.encode_images(pixel_values)  # {tower: [1, ...]}
        self.turns: list[dict] = []

    def ask(self, question: str, temperature: float = 0.0, max_new_tokens: int = 256, streamer=None) -> dict:
        """Add a human turn, generate the reply (streamed if `streamer`), keep it; returns answer and counts.

        `<image>` in `question` is dropped: the chat shows its one image in the first turn itself."""
        question = clean_text(question)
        if not question:
            raise SgeoError("the question is empty once <image> is taken out; ask it in words")
        turns = [*self.turns, question_turn(question, first=not self.turns)]
        tokens = self.processor.tokenize(turns, self.template, add_generation_prompt=True)
        input_ids = self._tensor(tokens["input_ids"])  # [1, N]
        sampling = (
            {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        )
        start = time.perf_counter()
        new_tokens = self.model.generate(
            input_ids, image_features=self.image_features,
            max_new_tokens=max_new_tokens, streamer=streamer,
            pad_token_id=self.processor.tokenizer.pad_token_id, **sampling,
        )[0]  # fmt: skip
        seconds = time.perf_counter() - start
        # the answer ends before the model's end-of-turn token (a chat template's, or </s>)
        answer_ids = self.processor.answer_ids(new_tokens.tolist())
        answer = self.processor.decode_answer(answer_ids)
        self.turns = [*turns, {"from": "gpt", "value": answer}]
        return {"answer": answer, "tokens": len(answer_ids), "seconds": seconds}

    def _tensor(self, ids: list[int]):
        import torch

        return torch.tensor([ids], device=self.model.device)


def run_ask(config: AskConfig) -> dict | None:
    """Answer `config.question` (or questions read from stdin) about `config.image`."""
    from ..pipeline.images import load_image

    image, _ = load_image(config.image)  # a missing or broken image fails before any model loads
    if config.max_new_tokens < 1:
        raise SgeoError(f"--max-new-tokens must be at least 1, got {config.max_new_tokens}")
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
    check_max_new_tokens(config.max_new_tokens, model, processor)
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
