"""Any LLM's own chat template, as data: LLaVA-format conversations rendered exactly as transformers'
`apply_chat_template` renders them, with the supervised character spans `conversation.render` returns.

LLaVA-1.5's `plain` / `vicuna_v1` / `llava_v1` stay in `conversation.py` (LLaVA / SpatialGeo checkpoints, and
LLMs with no chat template such as Vicuna); this module is the road for every other LLM. `resolve_template`
picks between the two.

- Text: the tokenizer's Jinja template (its default system message included, e.g. Qwen2.5's "You are Qwen,
  created by Alibaba Cloud. You are a helpful assistant."), rendered by transformers itself, so it is
  `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)` character for
  character. `<image>` stays in the text, moved to the front of its turn as `conversation.normalise_turns`
  does. A `system` string replaces the template's default system message.
- Tokens: the rendered text already holds the template's special tokens (Llama-3.1's `<|begin_of_text|>`
  included), so it is tokenized with `add_special_tokens=False`, as `apply_chat_template(tokenize=True)` does
  (`ChatTemplate.add_special_tokens`).
- Supervised spans: each assistant turn's content as the template renders it plus its end-of-turn token
  string(s) (ChatML `content<|im_end|>`, not the "\\n" after it; Llama-3.1 `content<|eot_id|>`). Found without
  knowing the template: turn i is rendered once more with a sentinel as its content; the text before and after
  the sentinel must then be the real text's prefix and suffix, and what lies between them is the content as
  rendered. A template that drops, moves or rewrites an answer is refused rather than trained on something else.
- Stopping: the model's `generation_config.json` eos ids, the tokenizer's eos token and the template's turn
  terminator (`stop_strings` / `stop_token_ids`).
- Thinking (Qwen3): templates that read `enable_thinking` are rendered with `enable_thinking=False`: answers
  are trained and generated without thinking. Qwen3's template then writes an empty `<think>\\n\\n</think>\\n\\n`
  after the assistant header of the turn being generated and of a conversation's last answer; it is prompt,
  never supervised. Earlier answers are rendered without it, as the template renders history. An answer that
  itself holds a `<think>...</think>` block is refused: the template would move the reasoning out of the
  answer (last turn) or drop it (earlier turns), so the labels would not be the answer as written.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SgeoError, one_line
from .conversation import TEMPLATES, Template, get_template, normalise_turns

LLAVA_TEMPLATES = tuple(TEMPLATES)  # plain, vicuna_v1, llava_v1
CHAT = "chat"
NO_CHAT_TEMPLATE = "the LLM has no chat template; pass --template vicuna_v1 (LLaVA-1.5's)"
_ROLES = {"human": "user", "gpt": "assistant"}
_PROBE = [{"from": "human", "value": "Hello."}, {"from": "gpt", "value": "Hi."}]


class ChatTemplateError(SgeoError, ValueError):
    """A chat template sgeo cannot train or generate with; the message is one line."""


@dataclass
class ChatTemplate:
    """An LLM's Jinja chat template and what sgeo needs around it. Render with `render`, which has
    `conversation.render`'s contract: (prompt text, supervised [start, end) character spans)."""

    tokenizer: Any = field(repr=False)
    source: str = field(repr=False)  # the Jinja text, saved with the model
    system: str | None = None  # replaces the template's default system message
    template_kwargs: dict = field(default_factory=dict)  # e.g. {"enable_thinking": False}
    stop_strings: tuple[str, ...] = ()  # end-of-turn strings: the terminator first, then the eos tokens
    name: str = CHAT
    add_special_tokens: bool = False  # the text holds the template's own special tokens

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def from_tokenizer(
        cls, tokenizer, system: str | None = None, eos_token_ids: list[int] | tuple[int, ...] = ()
    ) -> ChatTemplate:
        """The tokenizer's own chat template; `eos_token_ids` are generation_config.json's (see
        `generation_eos_ids`). Refuses, in one line, a template that cannot render an assistant turn."""
        source = _template_source(tokenizer)
        if source is None:
            raise ChatTemplateError(NO_CHAT_TEMPLATE)
        return cls.from_source(tokenizer, source, system=system, eos_token_ids=eos_token_ids)

    @classmethod
    def from_source(
        cls,
        tokenizer,
        source: str,
        system: str | None = None,
        eos_token_ids: list[int] | tuple[int, ...] = (),
    ) -> ChatTemplate:
        kwargs = {"enable_thinking": False} if "enable_thinking" in source else {}
        template = cls(tokenizer, source, system, kwargs)
        # Probe one exchange: the answer must come back whole, followed by an end-of-turn string.
        terminator = template._probe_terminator(_eos_strings(tokenizer, eos_token_ids))
        template.stop_strings = tuple(dict.fromkeys([terminator, *_eos_strings(tokenizer, eos_token_ids)]))
        return template

    def to_dict(self) -> dict:
        """What a model directory saves (the tokenizer is saved beside it)."""
        return {"format": CHAT, "chat_template": self.source, "system": self.system,
                "template_kwargs": self.template_kwargs, "stop_strings": list(self.stop_strings)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict, tokenizer) -> ChatTemplate:
        if data.get("format") != CHAT or not isinstance(data.get("chat_template"), str):
            raise ChatTemplateError(
                "the saved template is not a chat template; save it with ChatTemplate.to_dict"
            )
        return cls(tokenizer, data["chat_template"], data.get("system"), dict(data.get("template_kwargs") or {}),
                   tuple(data.get("stop_strings") or ()))  # fmt: skip

    # -- rendering -------------------------------------------------------------------------------
    def messages(self, conversations: list[dict], system: str | None = None) -> list[dict]:
        """LLaVA-format turns -> chat messages (`<image>` at the front of its turn), the system message first
        when one is given (here or on the template); without one, the template writes its default."""
        system = self.system if system is None else system
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages += [{"role": _ROLES[role], "content": text} for role, text in normalise_turns(conversations)]
        return messages

    def render(
        self, conversations: list[dict], add_generation_prompt: bool = False, system: str | None = None
    ) -> tuple[str, list[tuple[int, int]]]:
        """Prompt text and the supervised [start, end) character spans (each answer and its end-of-turn
        string(s)). With `add_generation_prompt` the turns end with a human turn and the text ends where the
        next answer begins."""
        messages = self.messages(conversations, system)
        if add_generation_prompt and messages and messages[-1]["role"] == "assistant":
            raise ValueError("add_generation_prompt needs the turns to end with a human turn")
        text = self._apply(messages, add_generation_prompt)
        spans, first_turn = [], int(bool(messages) and messages[0]["role"] == "system")
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                turn = index - first_turn  # the LLaVA turn's index, as normalise_turns counts
                start, end = self._content_span(messages, index, text, add_generation_prompt, turn)
                spans.append((start, end + self._terminator_length(text, end, turn)))
        return text, spans

    def _apply(self, messages: list[dict], add_generation_prompt: bool) -> str:
        import jinja2

        try:
            return self.tokenizer.apply_chat_template(
                messages, chat_template=self.source, tokenize=False, add_generation_prompt=add_generation_prompt,
                **self.template_kwargs,
            )  # fmt: skip
        except (jinja2.TemplateError, ValueError, TypeError, KeyError, IndexError) as error:
            detail = one_line(str(error), 200)
            raise ChatTemplateError(f"the chat template cannot render this conversation: {detail}") from None

    def _content_span(self, messages, index, text, add_generation_prompt, turn) -> tuple[int, int]:
        """Where message `index`'s content (LLaVA turn `turn`) lies in `text`, by rendering a sentinel in its
        place: the text before and after the sentinel must be `text`'s prefix and suffix."""
        # Plain ASCII, no whitespace: no template transform (trim, a split on "</think>") touches it.
        sentinel = f"SGEO{secrets.token_hex(8)}"
        probe = [dict(m, content=sentinel) if i == index else m for i, m in enumerate(messages)]
        marked = self._apply(probe, add_generation_prompt)
        if marked.count(sentinel) != 1:
            raise ChatTemplateError(
                f"the chat template cannot render an assistant turn (turn {turn} appears {marked.count(sentinel)} "
                "times in the text, not once); pass --template vicuna_v1"
            )
        before, after = marked.split(sentinel)
        end = len(text) - len(after)
        if not (text.startswith(before) and text.endswith(after) and end >= len(before)):
            raise ChatTemplateError(
                f"the chat template renders the rest of the conversation differently depending on turn {turn}'s "
                "text (a <think> block in an answer?); sgeo supervises answers as written"
            )
        rendered, written = text[len(before) : end], messages[index]["content"]
        if rendered.strip() != written.strip():  # a template may trim (Llama-3.1); it may not rewrite
            raise ChatTemplateError(
                f"the chat template rewrites turn {turn} ({written[:40]!r} renders as {rendered[:40]!r}; a "
                "<think> block in an answer?); sgeo supervises answers as written"
            )
        return len(before), end

    def _terminator_length(self, text: str, end: int, turn: int) -> int:
        match = _match_stop(text, end, self.stop_strings)
        if match is None:
            raise ChatTemplateError(
                f"the chat template ends turn {turn} with {text[end : end + 20]!r}, not an end-of-turn token "
                f"({', '.join(self.stop_strings)})"
            )
        return match

    def _probe_terminator(self, eos: list[str]) -> str:
        """Render one exchange and return the string that ends the answer: an eos token, else a special token."""
        messages = self.messages(_PROBE)
        try:
            text = self._apply(messages, False)
        except ChatTemplateError as error:
            detail = str(error).removeprefix("the chat template cannot render this conversation: ")
            raise ChatTemplateError(
                f"the chat template cannot render an assistant turn ({detail}); pass --template vicuna_v1"
            ) from None
        _, end = self._content_span(messages, len(messages) - 1, text, False, len(_PROBE) - 1)
        special = [t for t in _special_tokens(self.tokenizer) if t not in eos]
        for candidates in (eos, special):
            length = _match_stop(text, end, candidates)
            if length is not None:
                return text[end : end + length].strip()
        raise ChatTemplateError(
            f"the chat template ends an answer with {text[end : end + 20]!r}, no end-of-turn token, so generation "
            "could not stop; pass --template vicuna_v1"
        )

    # -- generation ------------------------------------------------------------------------------
    def stop_token_ids(self) -> list[int]:
        """The ids generation stops at: each stop string that is one token."""
        ids = []
        for text in self.stop_strings:
            encoded = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
        return ids


def _match_stop(text: str, end: int, candidates) -> int | None:
    """Length of whitespace + the longest candidate at text[end:], or None."""
    rest = text[end:]
    gap = len(rest) - len(rest.lstrip())
    for candidate in sorted((c for c in candidates if c), key=len, reverse=True):
        if rest.startswith(candidate, gap):
            return gap + len(candidate)
    return None


def _template_source(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    if isinstance(template, str):
        return template
    try:
        return tokenizer.get_chat_template()  # named templates: the "default" one
    except ValueError as error:
        raise ChatTemplateError(f"cannot pick the LLM's chat template: {one_line(str(error), 200)}") from None


def _special_tokens(tokenizer) -> list[str]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return [token.content for token in decoder.values() if getattr(token, "special", False)]


def _eos_strings(tokenizer, eos_token_ids) -> list[str]:
    strings = [tokenizer.convert_ids_to_tokens(int(i)) for i in eos_token_ids]
    if tokenizer.eos_token:
        strings.append(tokenizer.eos_token)
    return [s for s in dict.fromkeys(strings) if s]


def generation_eos_ids(directory: str | Path) -> list[int]:
    """The eos ids a model directory's generation_config.json names (an int or a list), else config.json's."""
    for name in ("generation_config.json", "config.json"):
        try:
            value = json.loads((Path(directory) / name).read_text()).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        if value is not None:
            values = value if isinstance(value, list) else [value]
            if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                return list(values)
    return []


def resolve_template(
    name: str | None, tokenizer, system: str | None = None, eos_token_ids: list[int] | tuple[int, ...] = ()
) -> Template | ChatTemplate:
    """The template a command speaks: "plain" / "vicuna_v1" / "llava_v1" -> LLaVA-1.5's (conversation.py);
    "chat", or None with a tokenizer chat template -> the tokenizer's; None without one -> a one-line error."""
    if name in LLAVA_TEMPLATES:
        return get_template(name)
    if name not in (None, CHAT):
        raise ChatTemplateError(f"unknown template {name!r}; known: {', '.join([*LLAVA_TEMPLATES, CHAT])}")
    return ChatTemplate.from_tokenizer(tokenizer, system=system, eos_token_ids=eos_token_ids)
