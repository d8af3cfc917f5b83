"""Conversation templates with exactly LLaVA-1.5's strings and separators (`plain`, `vicuna_v1`).

`render` turns LLaVA-format turns into the prompt text and the character spans that are supervised (the
assistant replies with their leading space and their end-of-turn separator), so the processor can label tokens by their offsets
whatever the tokenizer does with spaces.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100
SPEAKERS = ("human", "gpt")  # LLaVA's `roles = {"human": ..., "gpt": ...}`: anything else is a KeyError there


def turn_order_problem(i: int, speaker: str) -> str | None:
    """Why turn i cannot be from `speaker` (LLaVA's turns alternate human, gpt, starting with the human), or
    None: the one alternation rule of the trainer's sample check and of rendering."""
    if speaker != SPEAKERS[i % 2]:
        return f"turn {i} is from {speaker!r}; turns must alternate human, gpt"
    return None


def image_turn(text: str, images: int = 1) -> str:
    """A human turn showing `images` images, as LLaVA writes it (its training data and its eval scripts):
    "<image>\n" per image, then `text`. The one home of that form: everything that writes a turn calls it."""
    return (IMAGE_TOKEN + "\n") * images + text


def question_turn(question: str, first: bool) -> dict:
    """A human turn of a conversation about one image: the first opens with the image (`image_turn`), the
    later ones are the question alone."""
    return {"from": "human", "value": image_turn(question) if first else question}


def clean_text(text: str) -> str:
    """A user's question without `<image>`: `sgeo ask` and `sgeo serve` place the one image themselves, and a
    stray token would ask for another image the conversation does not have."""
    return text.replace(IMAGE_TOKEN, "").strip()


@dataclass(frozen=True)
class Template:
    name: str
    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str


_SYSTEM = (
    "A chat between a curious {who} and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the {who}'s questions."
)

TEMPLATES = {
    # LLaVA `conv_llava_plain`: the human turn is replaced by the image; the caption is the target.
    "plain": Template(name="plain", system="", roles=("", ""), sep="\n", sep2="\n"),
    # LLaVA `conv_vicuna_v1` (SeparatorStyle.TWO): `--version v1`, what LLaVA-1.5 and SpatialGeo finetune with.
    "vicuna_v1": Template(
        name="vicuna_v1", system=_SYSTEM.format(who="user"), roles=("USER", "ASSISTANT"), sep=" ", sep2="</s>"
    ),
    # LLaVA `conv_llava_v1`: the same, "curious human"; what LLaVA's CLI and SpatialGeo's eval_spatial.py use.
    "llava_v1": Template(
        name="llava_v1", system=_SYSTEM.format(who="human"), roles=("USER", "ASSISTANT"), sep=" ", sep2="</s>"
    ),
}


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def images_in_front(text: str) -> bool:
    """Whether `text` is already in the form LLaVA's eval scripts write: "<image>\n" per image, then text
    holding no other `<image>`."""
    k = text.count(IMAGE_TOKEN)
    return k > 0 and text.startswith(image_turn("", k))


def normalise_turns(conversations: list[dict], as_written: bool = False) -> list[tuple[str, str]]:
    """LLaVA-format turns -> [(role, text)] with `<image>` moved to the front of its turn, as LLaVA does.

    A turn with k `<image>` starts with k of them, each followed by "\n", then the rest of its text: the
    images keep their order, and a single image gives exactly LLaVA's "<image>\n" + text.
    `as_written`: a turn already in that form is kept byte for byte (a prompt, not training data: LLaVA's
    and SpatialGeo's eval scripts put the question in the template as it is, trailing space or newline
    included; only training's preprocess_multimodal strips it).
    """
    turns = []
    for i, turn in enumerate(conversations):
        role = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}.get(turn.get("from"))
        if role is None:
            raise ValueError(f"turn {i} has unknown speaker {turn.get('from')!r}; expected 'human' or 'gpt'")
        if problem := turn_order_problem(i, role):
            raise ValueError(problem)
        text = turn.get("value") or ""
        if as_written and images_in_front(text):
            pass
        elif images := text.count(IMAGE_TOKEN):
            # LLaVA strips the result too: a turn that is only "<image>" stays "<image>"
            text = image_turn(text.replace(IMAGE_TOKEN, "").strip(), images).strip()
        turns.append((role, text))
    return turns


def render(
    template: Template | str, conversations: list[dict], add_generation_prompt: bool = False
) -> tuple[str, list[tuple[int, int]]]:
    """Prompt text and the supervised [start, end) character spans.

    With `add_generation_prompt`, the text ends where the assistant's next reply begins (the turns given
    then end with a human turn).
    """
    if hasattr(template, "render"):  # an LLM's own chat template (chat_template.ChatTemplate) renders itself
        return template.render(conversations, add_generation_prompt=add_generation_prompt)
    template = get_template(template) if isinstance(template, str) else template
    turns = normalise_turns(conversations, as_written=add_generation_prompt)
    if template.name == "plain":
        return _render_plain(turns, add_generation_prompt)

    text, spans = template.system + template.sep, []
    for role, message in turns:
        if not message:
            # LLaVA's get_prompt writes an empty message as "ROLE:" with no separator; nothing is supervised
            # (preprocess_v1's round check then splits that text as it is, mostly ignoring every label)
            text += f"{template.roles[0 if role == 'human' else 1]}:"
        elif role == "human":
            text += f"{template.roles[0]}: {message}{template.sep}"
        else:
            # The space after "ASSISTANT:" belongs to the reply: the generation prompt ends at the colon,
            # so the model must learn to write it (a tokenizer may make it a token of its own).
            text += f"{template.roles[1]}:"
            start = len(text)
            text += " " + message + template.sep2
            spans.append((start, len(text)))
    if add_generation_prompt:
        text += f"{template.roles[1]}:"
    return text, spans


def _render_plain(
    turns: list[tuple[str, str]], add_generation_prompt: bool
) -> tuple[str, list[tuple[int, int]]]:
    # LLaVA's preprocess_plain: "<image>" + caption + "\n"; the human text is dropped.
    if add_generation_prompt:
        return IMAGE_TOKEN, []
    if len(turns) != 2:
        raise ValueError(f"the plain template takes one (image, caption) pair, got {len(turns)} turns")
    caption = turns[1][1]
    return IMAGE_TOKEN + caption + "\n", [(len(IMAGE_TOKEN), len(IMAGE_TOKEN) + len(caption) + 1)]
