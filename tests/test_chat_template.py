"""Any LLM's chat template (sgeo.model.chat_template) against transformers' own `apply_chat_template`, on tiny
stand-ins of Qwen2.5-7B-Instruct, Llama-3.1-8B-Instruct and Qwen3-8B in their published layouts (llm_layouts.py),
and the one-line refusals (no chat template; a template that cannot render an answer)."""

from __future__ import annotations

import hashlib
import json
import random
import re

import pytest

from llm_layouts import CHAT_FAMILIES, LLAMA31, PUBLISHED_IDS, QWEN3, QWEN25, VICUNA, write_all
from sgeo.errors import SgeoError
from sgeo.model.chat_template import (
    NO_CHAT_TEMPLATE,
    ChatTemplate,
    ChatTemplateError,
    generation_eos_ids,
    resolve_template,
)
from sgeo.model.conversation import IMAGE_TOKEN, TEMPLATES

CONVERSATIONS = 200  # per family
# sha256 of the published templates (tests/data/llm_layouts/chat_templates.json): an edit to the data fails here
PUBLISHED_SHA256 = {
    QWEN25: "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
    LLAMA31: "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
    QWEN3: "87a2728cb8dc9fe424d624542f6060ec05a1d285ebbec578bb078900e33396b5",
}
# Independent of chat_template.py: where each family's template puts an answer and its end-of-turn token.
ORACLES = {
    QWEN25: re.compile(r"<\|im_start\|>assistant\n(.*?)<\|im_end\|>", re.S),
    QWEN3: re.compile(r"<\|im_start\|>assistant\n(?:<think>\n\n</think>\n\n)?(.*?)<\|im_end\|>", re.S),
    LLAMA31: re.compile(r"<\|start_header_id\|>assistant<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S),
}
TERMINATORS = {QWEN25: "<|im_end|>", QWEN3: "<|im_end|>", LLAMA31: "<|eot_id|>"}
SYSTEMS = ["You are a careful spatial assistant.", "Answer in metres.\nBe brief."]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("llm_layouts"))


@pytest.fixture(scope="module")
def tokenizers(layouts):
    from sgeo.model.processing import load_tokenizer

    loaded = {}
    for repo_id, directory in layouts.items():
        tokenizer = load_tokenizer(directory)
        # as SpatialGeoProcessor does: `<image>` becomes one special token
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        loaded[repo_id] = tokenizer
    return loaded


# -- generated conversations ------------------------------------------------------------------------
_WORDS = [
    "how", "far", "is", "the", "red", "box", "from", "blue", "sphere", "left", "right", "of", "camera", "what",
    "colour", "tall", "wide", "cube", "cylinder", "above", "below", "metres", "closer", "taller", "número", "café",
]  # fmt: skip


def _sentence(rng: random.Random) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 9)))
    return text.capitalize() + rng.choice(["?", ".", "", " (about 2.5 m)"])


def _answer(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.05:
        return ""
    if kind < 0.15:
        return " " + _sentence(rng)  # a leading space: Qwen keeps it, Llama-3.1 trims it
    if kind < 0.25:
        return _sentence(rng) + "\n" + _sentence(rng) + "\n"  # lines and a trailing newline
    if kind < 0.35:
        return f"{rng.randint(0, 400) / 100:.2f} meters"
    return _sentence(rng)


def _conversation(rng: random.Random) -> tuple[list[dict], list[dict], str | None, bool]:
    """(LLaVA turns, the chat messages they mean (built here, not by sgeo), system, add_generation_prompt):
    1-4 rounds, an image (first in its turn or after the text) in the first turn, a later one or none."""
    rounds = rng.randint(1, 4)
    image_round = rng.choice([None, 0, 0, rng.randrange(rounds)])
    system = rng.choice([None, None, *SYSTEMS])
    turns, messages = [], ([{"role": "system", "content": system}] if system is not None else [])
    for r in range(rounds):
        question, answer = _sentence(rng), _answer(rng)
        value = question
        if r == image_round:
            value = rng.choice(
                [f"{IMAGE_TOKEN}\n{question}", f"{question}\n{IMAGE_TOKEN}", f"{question} {IMAGE_TOKEN}"]
            )
            question = f"{IMAGE_TOKEN}\n{question}"  # LLaVA moves the image to the front of its turn
        turns += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    generation = rng.random() < 0.3
    if generation:
        turns, messages = turns[:-1], messages[:-1]
    return turns, messages, system, generation


def _token_mask(offsets, spans) -> list[int]:
    return [int(end > start and any(start < b and end > a for a, b in spans)) for start, end in offsets]


# -- parity -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("repo_id", CHAT_FAMILIES)
def test_parity_with_apply_chat_template(repo_id, layouts, tokenizers):
    tokenizer = tokenizers[repo_id]
    template = resolve_template(None, tokenizer, eos_token_ids=generation_eos_ids(layouts[repo_id]))
    assert isinstance(template, ChatTemplate) and template.add_special_tokens is False
    kwargs = {"enable_thinking": False} if repo_id == QWEN3 else {}
    assert template.template_kwargs == kwargs
    rng = random.Random(sum(map(ord, repo_id)))
    seen = {"system": 0, "default system": 0, "multi-turn": 0, "image": 0, "text only": 0, "generation": 0}
    for _ in range(CONVERSATIONS):
        turns, messages, system, generation = _conversation(rng)
        text, spans = template.render(turns, add_generation_prompt=generation, system=system)
        # 1. the text is transformers' own
        expected = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation, **kwargs
        )
        assert text == expected
        # 2. so are the ids (the text holds its special tokens: no BOS added again)
        encoded = tokenizer(text, add_special_tokens=template.add_special_tokens, return_offsets_mapping=True)
        reference = tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=generation, **kwargs
        )
        assert encoded["input_ids"] == reference["input_ids"]
        # 3. supervised: exactly each answer and its end-of-turn token, by an oracle that knows the family
        oracle = [(m.start(1), m.end()) for m in ORACLES[repo_id].finditer(text)]
        assert spans == oracle
        assert [text[a:b] for a, b in spans] == [
            (m["content"].strip() if repo_id == LLAMA31 else m["content"]) + TERMINATORS[repo_id]
            for m in messages if m["role"] == "assistant"
        ]  # fmt: skip
        offsets = encoded["offset_mapping"]
        mask = _token_mask(offsets, spans)
        assert mask == _token_mask(offsets, oracle)
        # no token straddles a span edge: the labels are whole tokens of the answer
        edges = {s for s, _ in offsets} | {e for _, e in offsets}
        assert all(a in edges and b in edges for a, b in spans)
        supervised = [i for i, m in zip(encoded["input_ids"], mask, strict=True) if m]
        assert supervised.count(tokenizer.convert_tokens_to_ids(TERMINATORS[repo_id])) == len(spans)
        seen["system"] += system is not None
        seen["default system"] += system is None
        seen["multi-turn"] += len(turns) > 2
        seen["image"] += any(IMAGE_TOKEN in t["value"] for t in turns)
        seen["text only"] += not any(IMAGE_TOKEN in t["value"] for t in turns)
        seen["generation"] += generation
    assert min(seen.values()) >= 20, seen


def test_default_system_messages_and_thinking(tokenizers, layouts):
    """What the three templates write around one exchange: Qwen2.5's default system message, Llama-3.1's
    dated system header, Qwen3's empty think block (prompt, never supervised) with thinking off."""
    turns = [{"from": "human", "value": f"Where is it?\n{IMAGE_TOKEN}"}, {"from": "gpt", "value": "Left."}]
    qwen25, spans = resolve_template(None, tokenizers[QWEN25]).render(turns)
    assert qwen25 == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhere is it?<|im_end|>\n<|im_start|>assistant\nLeft.<|im_end|>\n"
    )
    assert [qwen25[a:b] for a, b in spans] == ["Left.<|im_end|>"]  # not the "\n" after it
    overridden, _ = resolve_template(None, tokenizers[QWEN25], system="Be brief.").render(turns)
    assert overridden.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and "Alibaba" not in overridden
    llama, spans = resolve_template(None, tokenizers[LLAMA31]).render(turns)
    assert llama.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
                            "Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>")  # fmt: skip
    assert [llama[a:b] for a, b in spans] == ["Left.<|eot_id|>"]
    qwen3 = resolve_template(None, tokenizers[QWEN3])
    text, spans = qwen3.render(turns)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nLeft.<|im_end|>\n")
    assert [text[a:b] for a, b in spans] == ["Left.<|im_end|>"]
    prompt, _ = qwen3.render(turns[:1], add_generation_prompt=True)
    # generation starts at the answer
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # an answer holding its own reasoning would not be trained as written: refused, last turn or earlier
    thinking = [turns[0], {"from": "gpt", "value": "<think>\nIt is on the left.\n</think>\n\nLeft."}]
    for conversation in (
        thinking,
        [*thinking, {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}],
    ):
        with pytest.raises(ChatTemplateError, match="think") as refused:
            qwen3.render(conversation)
        assert "\n" not in str(refused.value)


def test_generation_markers_agree(tokenizers):
    """Where a template marks answers with {% generation %}, transformers' assistant mask is the oracle: sgeo's
    spans (found without the markers) select the same tokens. The template is a ChatML written for this test."""
    marked = (
        "{%- for message in messages %}{%- if message['role'] == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{{- '\\n' }}{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    tokenizer = tokenizers[QWEN25]
    template = ChatTemplate.from_source(tokenizer, marked)
    rng = random.Random(7)
    for _ in range(50):
        turns, messages, system, generation = _conversation(rng)
        text, spans = template.render(turns, add_generation_prompt=generation, system=system)
        reference = tokenizer.apply_chat_template(messages, chat_template=marked, add_generation_prompt=generation,
                                                  return_assistant_tokens_mask=True)  # fmt: skip
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        assert encoded["input_ids"] == reference["input_ids"]
        assert _token_mask(encoded["offset_mapping"], spans) == reference["assistant_masks"]


def test_stop_tokens_are_the_turn_terminator_and_eos(layouts, tokenizers):
    expected = {QWEN25: ["<|im_end|>", "<|endoftext|>"], QWEN3: ["<|im_end|>", "<|endoftext|>"],
                LLAMA31: ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"]}  # fmt: skip
    for repo_id in CHAT_FAMILIES:
        tokenizer = tokenizers[repo_id]
        eos = generation_eos_ids(layouts[repo_id])
        # generation_config.json names the published eos tokens, in their published order
        published = PUBLISHED_IDS[repo_id]
        assert tokenizer.convert_ids_to_tokens(eos) == [
            next(t for t, i in published.items() if i == p) for p in published["eos"]
        ]  # fmt: skip
        template = resolve_template("chat", tokenizer, eos_token_ids=eos)
        assert list(template.stop_strings) == expected[repo_id]
        assert template.stop_token_ids() == tokenizer.convert_tokens_to_ids(expected[repo_id])
        saved = ChatTemplate.from_dict(json.loads(json.dumps(template.to_dict())), tokenizer)
        turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]
        assert saved.render(turns) == template.render(turns) and saved.stop_strings == template.stop_strings


def test_layouts_are_the_published_ones(layouts, tokenizers):
    from transformers import AutoModelForCausalLM

    architectures = {QWEN25: "Qwen2ForCausalLM", LLAMA31: "LlamaForCausalLM", QWEN3: "Qwen3ForCausalLM",
                     VICUNA: "LlamaForCausalLM"}  # fmt: skip
    for repo_id, directory in layouts.items():
        config = json.loads((directory / "config.json").read_text())
        assert config["architectures"] == [architectures[repo_id]]
        model = AutoModelForCausalLM.from_pretrained(directory)
        assert type(model).__name__ == architectures[repo_id]
        tokenizer = tokenizers[repo_id]
        if repo_id == VICUNA:
            assert not tokenizer.chat_template and (directory / "tokenizer.model").is_file()
            continue
        source = tokenizer.chat_template
        assert hashlib.sha256(source.encode()).hexdigest() == PUBLISHED_SHA256[repo_id]
    assert "You are Qwen, created by Alibaba Cloud" in tokenizers[QWEN25].chat_template


# -- refusals ---------------------------------------------------------------------------------------
def _one_line(error: BaseException) -> str:
    message = str(error)
    # the CLI prints an SgeoError as one `error:` line; ValueError for callers of conversation.get_template
    assert isinstance(error, SgeoError) and isinstance(error, ValueError)
    assert message and "\n" not in message
    return message


def test_llm_without_chat_template(tokenizers):
    vicuna = tokenizers[VICUNA]
    for name in (None, "chat"):
        with pytest.raises(ChatTemplateError) as refused:
            resolve_template(name, vicuna)
        assert _one_line(refused.value) == NO_CHAT_TEMPLATE
    # LLaVA's templates need no chat template, and stay exactly LLaVA's
    for name in ("plain", "vicuna_v1", "llava_v1"):
        assert resolve_template(name, vicuna) is TEMPLATES[name]
        assert resolve_template(name, tokenizers[QWEN25]) is TEMPLATES[name]
    with pytest.raises(ChatTemplateError) as refused:
        resolve_template("chatml", tokenizers[QWEN25])
    assert "unknown template 'chatml'" in _one_line(refused.value)


@pytest.mark.parametrize(
    "source, fragment",
    [
        # renders only the user's turns: the answer never appears
        ("{% for m in messages %}{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n{% endif %}"
         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", "cannot render an assistant"),
        # refuses assistant messages outright
        ("{% for m in messages %}{% if m.role == 'assistant' %}{{ raise_exception('no assistant turns') }}{% endif %}"
         "{{ m.content }}{% endfor %}", "cannot render an assistant turn (no assistant turns)"),
        # renders the answer twice
        ("{% for m in messages %}{{ m.content }}{{ m.content }}<|im_end|>{% endfor %}", "cannot render an assistant"),
        # no end-of-turn token after an answer: generation could not stop
        ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}", "no end-of-turn token"),
    ],
)  # fmt: skip
def test_template_that_cannot_render_an_answer(tokenizers, source, fragment):
    with pytest.raises(ChatTemplateError) as refused:
        ChatTemplate.from_source(tokenizers[QWEN25], source)
    assert fragment in _one_line(refused.value)
