"""`SpatialGeoProcessor`: images and LLaVA-format conversations -> model inputs.

Tokens in, tensors out: each `<image>` becomes `num_image_tokens` image-token ids, labels supervise only the
assistant replies, and truncation never cuts through an image's tokens. Two tokenization rules:

- `single_pass`: the prompt is tokenized once and labels follow the template's supervised character spans
  (token offsets), whatever the tokenizer does with spaces (the tiny preset's byte-level BPE);
- `llava`: LLaVA-1.5's own `tokenizer_image_token` + `preprocess_plain` / `preprocess_v1`, bit for bit, for
  models from LLaVA / SpatialGeo checkpoints (see `llava_text.py`).

Images get CLIP's preprocessing, after LLaVA's `pad` to a square (or CLIP's own resize + centre crop).

The conversation template is the model's, saved with it: `template` in processor_config.json names it
(`vicuna_v1`, the default and every LLaVA / SpatialGeo model's, `llava_v1`, or `chat`: the LLM's own Jinja
template, saved with the tokenizer as transformers saves it). `template()` gives it, `tokenize` uses it when
no other is named, and `stop_token_ids` / `decode_answer` end an answer at the model's end-of-turn tokens.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor, PreTrainedTokenizerBase

from ..errors import SgeoError, one_line
from .chat_template import CHAT, LLAVA_TEMPLATES, ChatTemplate, resolve_template
from .conversation import IGNORE_INDEX, IMAGE_TOKEN, Template, get_template, render
from .pixel_stats import CLIP_MEAN, CLIP_STD

ASPECT_MODES = ("pad", "crop")
TOKENIZATIONS = ("single_pass", "llava")
PROCESSOR_FILE = "processor_config.json"
# a processor_config.json without "template" is LLaVA-1.5's, as every model was before templates were saved
DEFAULT_TEMPLATE = "vicuna_v1"
MODEL_TEMPLATES = ("vicuna_v1", "llava_v1", CHAT)  # what a model speaks (`plain` is stage 1's, captions only)


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer directory as the class its `tokenizer_config.json` names (LLaVA's `LlamaTokenizer`, whose
    `legacy` flag its label rule reads), else through AutoTokenizer; never running code from the directory."""
    import transformers

    try:
        named = json.loads((Path(directory) / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        named = None
    cls = getattr(transformers, str(named), None) if named else None
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedTokenizerBase)):
        cls = AutoTokenizer
    try:
        return cls.from_pretrained(str(directory), trust_remote_code=False)
    except (OSError, ValueError, KeyError, ImportError) as error:
        detail = one_line(str(error), 240)
        raise SgeoError(f"cannot load the tokenizer in {directory}: {detail}") from None


def add_image_token(tokenizer) -> None:
    """`<image>` as one more special token, keeping the tokenizer's own extra special tokens special (a
    replaced list would leave Qwen's <|im_start|> in answers decoded with skip_special_tokens)."""
    import inspect

    names = inspect.signature(tokenizer.add_special_tokens).parameters
    keep = next(
        (n for n in ("replace_extra_special_tokens", "replace_additional_special_tokens") if n in names), None
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [IMAGE_TOKEN]}, **({keep: False} if keep else {})
    )


def build_image_processor(image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> CLIPImageProcessor:
    """openai/clip-vit-large-patch14-336's preprocessing (resize, centre crop), at `image_size`, with another
    tower's statistics where the first tower is not CLIP."""
    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
PAD_MAX_SIDE = 2048  # the padded square of a bigger picture is made from a shrunk copy (see expand_to_square)


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """LLaVA's `expand2square`: pad the short side symmetrically with the mean colour.

    Exactly LLaVA's pixels up to PAD_MAX_SIDE; a longer side is first shrunk to it (the encoders see 336 px
    anyway), so a 20000-pixel strip costs a 2048-pixel square, not a 20000-pixel one."""
    width, height = image.size
    if width == height:
        return image
    if max(width, height) > PAD_MAX_SIDE:
        scale = PAD_MAX_SIDE / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
        width, height = image.size
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


class SpatialGeoProcessor:
    def __init__(
        self,
        image_processor: CLIPImageProcessor,
        tokenizer: PreTrainedTokenizerBase,
        num_image_tokens: int,
        image_aspect_ratio: str = "pad",
        model_max_length: int = 2048,
        tokenization: str = "single_pass",
        template: str = DEFAULT_TEMPLATE,
        eos_token_ids: list[int] | tuple[int, ...] = (),
    ):
        if image_aspect_ratio not in ASPECT_MODES:
            raise ValueError(f"image_aspect_ratio={image_aspect_ratio!r} is not one of {list(ASPECT_MODES)}")
        if tokenization not in TOKENIZATIONS:
            raise ValueError(f"tokenization={tokenization!r} is not one of {list(TOKENIZATIONS)}")
        if template not in MODEL_TEMPLATES:
            raise ValueError(f"template={template!r} is not one of {list(MODEL_TEMPLATES)}")
        if IMAGE_TOKEN not in tokenizer.get_vocab():
            add_image_token(tokenizer)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token  # LLaVA pads Llama with unk
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.image_aspect_ratio = image_aspect_ratio
        self.model_max_length = model_max_length
        self.tokenization = tokenization
        self.template_name = template
        # the LLM's generation_config.json eos ids (a chat model's end-of-turn tokens among them)
        self.eos_token_ids = [int(i) for i in eos_token_ids]
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        # LLaVA's slow SentencePiece rule, from the tokenizer's tokenizer.model (None without one: a model saved
        # before processors wrote it keeps the installed tokenizer's ids)
        self.llava_text = None
        if tokenization == "llava":
            from .llava_text import SlowLlamaText

            self.llava_text = SlowLlamaText.for_tokenizer(tokenizer)
        self._chat_templates: dict[str | None, ChatTemplate] = {}  # by system message: built once each

    # -- persistence ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.tokenizer.save_pretrained(directory)
        if self.llava_text is not None:  # transformers writes only tokenizer.json; the slow rule reads this
            from .llava_text import SPM_FILE

            (directory / SPM_FILE).write_bytes(self.llava_text.model_proto)
        self.image_processor.save_pretrained(directory)
        (directory / PROCESSOR_FILE).write_text(json.dumps(self.settings(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> SpatialGeoProcessor:
        directory = Path(directory)
        settings = json.loads((directory / PROCESSOR_FILE).read_text())
        settings.update(overrides)
        return cls(CLIPImageProcessor.from_pretrained(directory), load_tokenizer(directory), **settings)

    def settings(self) -> dict:
        settings = {
            "num_image_tokens": self.num_image_tokens,
            "image_aspect_ratio": self.image_aspect_ratio,
            "model_max_length": self.model_max_length,
            "tokenization": self.tokenization,
        }
        # written only where they differ from what an older processor_config.json means without them
        if self.template_name != DEFAULT_TEMPLATE:
            settings["template"] = self.template_name
        if self.eos_token_ids:
            settings["eos_token_ids"] = list(self.eos_token_ids)
        return settings

    # -- the conversation template -------------------------------------------------------------------
    def template(self, system: str | None = None) -> Template | ChatTemplate:
        """The model's conversation template; `system` replaces its system message (a chat template's
        default one, or the text LLaVA's templates open with)."""
        return self.resolve_template(self.template_name, system)

    def resolve_template(self, template=None, system: str | None = None) -> Template | ChatTemplate:
        """A template given by name (None: the model's own; "chat": the tokenizer's chat template) or as an
        object (kept as it is) -> the object that renders it."""
        if template is None:
            template = self.template_name
        if isinstance(template, str):
            if template == CHAT:
                if system not in self._chat_templates:  # probed once per system message
                    eos = self.eos_token_ids
                    self._chat_templates[system] = resolve_template(CHAT, self.tokenizer, system, eos)
                return self._chat_templates[system]
            if template not in LLAVA_TEMPLATES:
                raise SgeoError(
                    f"unknown template {template!r}; known: {', '.join([*LLAVA_TEMPLATES, CHAT])}"
                )
            template = get_template(template)
        if system is not None:
            if isinstance(template, ChatTemplate):
                return dataclasses.replace(template, system=system)
            if template.name == "plain":
                raise SgeoError("the plain template (stage 1's captions) has no system message")
            return dataclasses.replace(template, system=system)
        return template

    @property
    def stop_token_ids(self) -> list[int]:
        """The ids an answer ends at: the template's end-of-turn token(s), generation_config.json's eos ids
        and the tokenizer's eos token (LLaVA's templates: `</s>`, which is all three)."""
        ids = []
        if self.template_name == CHAT:
            ids += self.template().stop_token_ids()
        ids += self.eos_token_ids
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return list(dict.fromkeys(int(i) for i in ids))

    def answer_ids(self, ids: list[int]) -> list[int]:
        """Generated ids up to (not including) the first stop token."""
        stops = set(self.stop_token_ids)
        end = next((k for k, token in enumerate(ids) if token in stops), len(ids))
        return list(ids[:end])

    def decode_answer(self, ids: list[int]) -> str:
        """Generated ids -> the answer's text: cut at the first stop token, special tokens dropped, an empty
        `<think>...</think>` block at its start taken out (thinking is off: Qwen3 answers after an empty one)."""
        text = self.tokenizer.decode(self.answer_ids(ids), skip_special_tokens=True).strip()
        if self.template_name == CHAT and text.startswith(THINK_OPEN) and THINK_CLOSE in text:
            text = text.split(THINK_CLOSE, 1)[1].strip()
        return text

    def preprocessing_spec(self) -> dict:
        """Everything about pixels that changes what the encoders see (part of the feature fingerprint)."""
        ip = self.image_processor
        return {
            "image_aspect_ratio": self.image_aspect_ratio,
            "size": dict(ip.size),
            "crop_size": dict(ip.crop_size),
            "image_mean": [float(x) for x in ip.image_mean],
            "image_std": [float(x) for x in ip.image_std],
            "resample": int(ip.resample),
            "rescale_factor": float(ip.rescale_factor),
        }

    # -- images --------------------------------------------------------------------------------------
    def preprocess_images(self, images: list[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> pixel_values [B, 3, S, S] (float32)."""
        if self.image_aspect_ratio == "pad":
            background = tuple(int(x * 255) for x in self.image_processor.image_mean)
            images = [expand_to_square(image.convert("RGB"), background) for image in images]
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    # -- text ----------------------------------------------------------------------------------------
    def tokenize(
        self, conversations: list[dict], template=None, add_generation_prompt: bool = False
    ) -> dict[str, list[int]]:
        """One conversation -> input_ids and labels (lists), images expanded, truncated safely.

        `template`: None for the model's own, a name ("plain", "vicuna_v1", "llava_v1", "chat") or a
        template object (`template()`'s, or a `Template` with another system prompt)."""
        template = self.resolve_template(template)
        if self.tokenization == "llava" and not isinstance(template, ChatTemplate):
            input_ids, labels = self._tokenize_llava(conversations, template, add_generation_prompt)
        else:
            input_ids, labels = self._tokenize_single_pass(conversations, template, add_generation_prompt)
        return self._truncate(input_ids, labels)

    def _tokenize_single_pass(self, conversations, template, add_generation_prompt):
        text, spans = render(template, conversations, add_generation_prompt=add_generation_prompt)
        # a chat template's text holds its own special tokens (Llama-3.1's <|begin_of_text|>): none added
        add_special = getattr(template, "add_special_tokens", True)
        encoded = self.tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special)
        input_ids, labels = [], []
        for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
            supervised = end > start and any(
                start < span_end and end > span_start for span_start, span_end in spans
            )
            if token_id == self.image_token_id:
                input_ids.extend([token_id] * self.num_image_tokens)
                labels.extend([IGNORE_INDEX] * self.num_image_tokens)
            else:
                input_ids.append(token_id)
                labels.append(token_id if supervised else IGNORE_INDEX)
        return input_ids, labels

    def _tokenize_llava(self, conversations, template, add_generation_prompt):
        from .llava_text import IMAGE_INDEX, plain_labels, tokenizer_image_token, v1_labels

        text, _ = render(template, conversations, add_generation_prompt=add_generation_prompt)
        has_image = IMAGE_TOKEN in text
        tokenizer = self.llava_text or self.tokenizer
        pad = self.tokenizer.pad_token_id  # LLaVA's is <unk>
        if add_generation_prompt:
            # without <image>: the whole text, as tokenizer(text)
            ids = tokenizer_image_token(text, tokenizer)
            labels = [IGNORE_INDEX] * len(ids)
        elif template.name == "plain":
            ids, labels = plain_labels(text, tokenizer)
        else:
            ids, labels = v1_labels(text, template, tokenizer, has_image, self.model_max_length, pad)
        input_ids, expanded = [], []
        # LLaVA's collator masks the pad id (its pad is <unk>) and prepare_inputs_labels_for_multimodal then
        # drops the masked tokens, so a literal "<unk>" in training text never reaches the model; its eval
        # passes no mask, so a prompt keeps it
        dropped = pad if not add_generation_prompt and pad == self.tokenizer.unk_token_id else None
        for token_id, label in zip(ids, labels, strict=True):
            if token_id == dropped:
                continue
            if token_id == IMAGE_INDEX:  # what LLaVA's prepare_inputs_labels_for_multimodal puts there
                input_ids.extend([self.image_token_id] * self.num_image_tokens)
                expanded.extend([IGNORE_INDEX] * self.num_image_tokens)
            else:
                input_ids.append(token_id)
                expanded.append(label)
        return input_ids, expanded

    def _truncate(self, input_ids: list[int], labels: list[int]) -> dict[str, list[int]]:
        limit = self.model_max_length
        if len(input_ids) > limit:
            # Any image token past the cut would leave its image's features without positions.
            if self.image_token_id in input_ids[limit:]:
                # name which image is cut and what the whole needs: with several images, "an image" misleads
                width, total = self.num_image_tokens, self.num_images(input_ids)
                cut = self.num_images(input_ids[:limit]) + 1
                which = "its only image" if total == 1 else f"image {cut} of its {total}"
                raise ValueError(
                    f"model_max_length={limit} would cut through an image's {width} tokens ({which}; the prompt "
                    f"needs {len(input_ids)} tokens, {total * width} of them images'); raise the maximum length"
                )
            input_ids, labels = input_ids[:limit], labels[:limit]
        return {"input_ids": input_ids, "labels": labels}

    def num_images(self, input_ids: list[int] | torch.Tensor) -> int:
        count = int((torch.as_tensor(input_ids) == self.image_token_id).sum())
        return count // self.num_image_tokens

    def __call__(
        self,
        conversations: list[dict],
        images: Image.Image | list[Image.Image] | None = None,
        template=None,
        add_generation_prompt: bool = False,
    ) -> dict[str, torch.Tensor]:
        """One sample -> batch-of-one tensors: input_ids, attention_mask, labels[, pixel_values]."""
        tokens = self.tokenize(conversations, template, add_generation_prompt)
        batch = {
            "input_ids": torch.tensor([tokens["input_ids"]]),
            "attention_mask": torch.ones(1, len(tokens["input_ids"]), dtype=torch.long),
            "labels": torch.tensor([tokens["labels"]]),
        }
        if images is not None:
            images = [images] if isinstance(images, Image.Image) else images
            batch["pixel_values"] = self.preprocess_images(images)
        return batch

    def pad(
        self, samples: list[dict[str, list[int]]], padding_side: str = "right"
    ) -> dict[str, torch.Tensor]:
        """Pad tokenized samples into a batch (right for training, left for batched generation)."""
        longest = max(len(s["input_ids"]) for s in samples)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for s in samples:
            n = len(s["input_ids"])
            fill = longest - n
            ids = s["input_ids"]
            labels = s.get("labels", [IGNORE_INDEX] * n)
            mask = [1] * n
            if padding_side == "right":
                ids, labels, mask = (
                    ids + [self.tokenizer.pad_token_id] * fill,
                    labels + [IGNORE_INDEX] * fill,
                    mask + [0] * fill,
                )
            else:
                ids, labels, mask = (
                    [self.tokenizer.pad_token_id] * fill + ids,
                    [IGNORE_INDEX] * fill + labels,
                    [0] * fill + mask,
                )
            batch["input_ids"].append(ids)
            batch["labels"].append(labels)
            batch["attention_mask"].append(mask)
        return {key: torch.tensor(value) for key, value in batch.items()}
