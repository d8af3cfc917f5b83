"""LLaVA-1.5's tokenization on a LLaVA-layout tokenizer (tests/reference_layouts.py's SentencePiece model), where
it used to differ from sgeo's: text that starts with a space right after `<image>`, empty turns, eval questions
ending in whitespace, a literal `<unk>`, and the samples LLaVA's data code trains that sgeo refused.

The oracle is written here apart from sgeo: transformers 4.37.2's slow `LlamaTokenizer` (what LLaVA-1.5 pins)
transcribed over the `sentencepiece` library, and LLaVA's `preprocess_multimodal`, `Conversation.get_prompt`,
`tokenizer_image_token`, `preprocess_v1` / `preprocess_plain`, its collator's attention mask and the model's
image placement (`prepare_inputs_labels_for_multimodal`: a sample with no image token gets no image).
"""

from __future__ import annotations

import pytest

from reference_layouts import VOCAB

IGNORE, IMAGE_INDEX, WIDTH = -100, -200, 4
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = SYSTEM.replace("user", "human")


class Slow437LlamaTokenizer:
    """transformers 4.37.2 `LlamaTokenizer` (slow), `tokenize` / `_tokenize` / `PreTrainedTokenizer.tokenize`
    and `__call__(text).input_ids`, for the files LLaVA-1.5 ships (`legacy` from tokenizer_config.json)."""

    UNDERLINE = "\u2581"

    def __init__(self, directory, legacy: bool = False):
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        raw = (directory / "tokenizer.model").read_bytes()
        self.legacy = legacy
        if legacy:  # get_spm_processor: `if self.legacy ...: tokenizer.Load(self.vocab_file)`
            self.sp = spm.SentencePieceProcessor(model_proto=raw)
        else:  # else: the proto with normalizer_spec.add_dummy_prefix = False
            proto = sentencepiece_model_pb2.ModelProto()
            proto.ParseFromString(raw)
            proto.normalizer_spec.add_dummy_prefix = False
            self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.unk_token, self.bos_token_id, self.pad_token_id = "<unk>", 1, 0  # LLaVA: pad = unk
        # the added tokens of the slow tokenizer: the special ones, no lstrip / rstrip
        self.added = {"<unk>": 0, "<s>": 1, "</s>": 2}

    @property
    def unk_token_length(self):
        return len(self.sp.encode(str(self.unk_token)))

    def _trie_split(self, text):
        # tokens_trie.split: leftmost match, longest at that position
        out, start, i = [], 0, 0
        while i < len(text):
            hits = [t for t in self.added if text.startswith(t, i)]
            if hits:
                token = max(hits, key=len)
                out.append(text[start:i])
                out.append(token)
                i += len(token)
                start = i
            else:
                i += 1
        out.append(text[start:])
        return [piece for piece in out if piece != ""] if len(out) > 1 else out

    def _tokenize(self, text):
        tokens = self.sp.encode(text, out_type=str)
        if self.legacy or not text.startswith((self.UNDERLINE, " ")):
            return tokens
        tokens = self.sp.encode(self.unk_token + text, out_type=str)
        return tokens[self.unk_token_length :] if len(tokens) >= self.unk_token_length else tokens

    def _base_tokenize(self, text):
        tokenized = []
        for token in self._trie_split(text):
            if not token:
                continue
            tokenized.extend([token] if token in self.added else self._tokenize(token))
        return tokenized

    def tokenize(self, text):
        if self.legacy or len(text) == 0:
            return self._base_tokenize(text)
        tokens = self._base_tokenize(self.UNDERLINE + text.replace(self.UNDERLINE, " "))
        if len(tokens) > 1 and tokens[0] == self.UNDERLINE and tokens[1] in self.added:
            tokens = tokens[1:]
        return tokens

    def __call__(self, text, max_length=None, truncation=False):
        ids = [self.bos_token_id] + [self.added.get(t, None) if t in self.added else self.sp.piece_to_id(t)
                                     for t in self.tokenize(text)]  # fmt: skip
        if truncation and max_length:
            ids = ids[:max_length]
        return type("Encoding", (), {"input_ids": ids})()


# -- LLaVA-1.5's data code -------------------------------------------------------------------------
def llava_tokenizer_image_token(prompt, tokenizer):
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]

    def insert_separator(x, sep):
        return [ele for sublist in zip(x, [sep] * len(x), strict=True) for ele in sublist][:-1]

    input_ids, offset = [], 0
    if len(chunks) > 0 and len(chunks[0]) > 0 and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(chunks[0][0])
    for x in insert_separator(chunks, [IMAGE_INDEX] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def llava_preprocess_multimodal(source):
    for sentence in source:
        if "<image>" in sentence["value"]:
            sentence["value"] = sentence["value"].replace("<image>", "").strip()
            sentence["value"] = "<image>" + "\n" + sentence["value"]
            sentence["value"] = sentence["value"].strip()
    return source


def llava_get_prompt(messages, system=SYSTEM):
    """Conversation.get_prompt, SeparatorStyle.TWO (sep " ", sep2 "</s>")."""
    seps = [" ", "</s>"]
    ret = system + seps[0]
    for i, (role, message) in enumerate(messages):
        if message:
            ret += role + ": " + message + seps[i % 2]
        else:
            ret += role + ":"
    return ret


def llava_preprocess_v1(source, tokenizer, has_image, max_length=2048):
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    if roles[source[0]["from"]] != "USER":
        source = source[1:]
    messages = []
    for j, sentence in enumerate(source):
        role = roles[sentence["from"]]
        assert role == ("USER", "ASSISTANT")[j % 2]
        messages.append((role, sentence["value"]))
    conversation = llava_get_prompt(messages)
    if has_image:
        input_ids = llava_tokenizer_image_token(conversation, tokenizer)
    else:
        input_ids = tokenizer(conversation, max_length=max_length, truncation=True).input_ids
    target = list(input_ids)
    sep = " " + "ASSISTANT" + ": "
    total_len = sum(t != tokenizer.pad_token_id for t in target)
    rounds = conversation.split("</s>")
    cur_len = 1
    target[:cur_len] = [IGNORE]
    for i, rou in enumerate(rounds):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        if has_image:
            round_len = len(llava_tokenizer_image_token(rou, tokenizer))
            instruction_len = len(llava_tokenizer_image_token(parts[0], tokenizer)) - 2
        else:
            round_len = len(tokenizer(rou).input_ids)
            instruction_len = len(tokenizer(parts[0]).input_ids) - 2
        if i != 0 and not tokenizer.legacy:
            round_len -= 1
            instruction_len -= 1
        target[cur_len : cur_len + instruction_len] = [IGNORE] * len(
            target[cur_len : cur_len + instruction_len]
        )
        cur_len += round_len
    target[cur_len:] = [IGNORE] * len(target[cur_len:])
    if cur_len < max_length and cur_len != total_len:
        target = [IGNORE] * len(target)
    return input_ids, target


def llava_preprocess_plain(source, tokenizer):
    assert len(source) == 2 and "<image>" in source[0]["value"]
    conversation = "<image>" + source[1]["value"] + "\n"
    input_ids = llava_tokenizer_image_token(conversation, tokenizer)
    target = list(input_ids)
    head = len(llava_tokenizer_image_token("<image>", tokenizer))
    target[:head] = [IGNORE] * head
    return input_ids, target


def llava_sample(sample, tokenizer, plain=False):
    """LazySupervisedDataset.__getitem__, its collator and the model's input step -> (the ids the model reads,
    images expanded, their labels, the number of images placed)."""
    import copy

    source = copy.deepcopy(sample["conversations"])
    has_image = "image" in sample
    if has_image:
        source = llava_preprocess_multimodal(source)
    ids, labels = (
        llava_preprocess_plain(source, tokenizer)
        if plain
        else llava_preprocess_v1(source, tokenizer, has_image)
    )
    mask = [t != tokenizer.pad_token_id for t in ids]  # the collator: input_ids.ne(pad_token_id)
    # prepare_inputs_labels_for_multimodal: `cur_input_ids[cur_attention_mask]` (labels alike), then each
    # IMAGE_INDEX becomes the image's features with IGNORE labels
    out_ids, out_labels = [], []
    for token, label, keep in zip(ids, labels, mask, strict=True):
        if not keep:
            continue
        if token == IMAGE_INDEX:
            out_ids += ["IMG"] * WIDTH
            out_labels += [IGNORE] * WIDTH
        else:
            out_ids.append(token), out_labels.append(label)
    return out_ids, out_labels, ids.count(IMAGE_INDEX)


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    from sgeo.model.spm import write_llama_tokenizer

    directory = tmp_path_factory.mktemp("llava-tokenizer")
    write_llama_tokenizer(directory, vocab_size=VOCAB)  # as reference_layouts.write_llava writes it
    return directory


@pytest.fixture(scope="module")
def processor(llava_dir):
    from sgeo.model.processing import SpatialGeoProcessor, build_image_processor, load_tokenizer

    return SpatialGeoProcessor(
        build_image_processor(112), load_tokenizer(llava_dir), WIDTH, tokenization="llava"
    )


@pytest.fixture(scope="module")
def slow(llava_dir):
    return Slow437LlamaTokenizer(llava_dir)


def sgeo_sample(processor, sample, plain=False):
    """What sgeo trains from `sample`: check_sample's cleaned sample, tokenized; images as "IMG"."""
    from sgeo.pipeline.samples import check_sample

    checked = check_sample(sample, needs_image=plain, plain=plain)
    assert checked.problem is None, checked.problem
    tokens = processor.tokenize(checked.sample["conversations"], "plain" if plain else "vicuna_v1")
    ids = ["IMG" if t == processor.image_token_id else t for t in tokens["input_ids"]]
    return ids, tokens["labels"], ids.count("IMG") // WIDTH, checked


def assert_as_llava(processor, slow, sample, plain=False):
    want_ids, want_labels, want_images = llava_sample(sample, slow, plain)
    ids, labels, images, checked = sgeo_sample(processor, sample, plain)
    assert ids == want_ids
    assert labels == want_labels
    assert images == want_images
    # sgeo gives the model the sample's image exactly when LLaVA places it
    assert ("image" in checked.sample) == bool(want_images)
    return want_labels


# -- 1. text starting with a space right after <image> ---------------------------------------------
def test_space_after_image_gives_two_word_start_pieces_as_llavas_slow_tokenizer(
    processor, slow, llava_dir, tmp_path
):
    from sgeo.model.processing import SpatialGeoProcessor

    only_image = {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>"},
                                                      {"from": "gpt", "value": "A red box."}]}  # fmt: skip
    labels = assert_as_llava(processor, slow, only_image)
    assert any(label != IGNORE for label in labels)  # it trains
    caption = {"image": "b.jpg", "conversations": [{"from": "human", "value": "<image>\nDescribe."},
                                                   {"from": "gpt", "value": " the red box"}]}  # fmt: skip
    assert_as_llava(processor, slow, caption, plain=True)
    # the rule itself: " ASSISTANT:" after an image is '▁' then '▁ASS...', where transformers 5 gives one piece
    prompt = processor.tokenize(only_image["conversations"][:1], "vicuna_v1", add_generation_prompt=True)
    ids = prompt["input_ids"]
    after = processor.tokenizer.convert_ids_to_tokens(ids[ids.index(processor.image_token_id) + WIDTH :])
    assert after[0] == "\u2581" and after[1].startswith("\u2581")
    assert ids == [processor.image_token_id if t == IMAGE_INDEX else t
                   for t in llava_tokenizer_image_token(llava_get_prompt([("USER", "<image>"), ("ASSISTANT", None)]), slow)
                   for t in ([t] * (WIDTH if t == IMAGE_INDEX else 1))]  # fmt: skip
    # a saved processor keeps the SentencePiece model (transformers writes only tokenizer.json) and the rule
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.model").read_bytes() == (llava_dir / "tokenizer.model").read_bytes()
    again = SpatialGeoProcessor.from_pretrained(tmp_path)
    assert again.tokenize(only_image["conversations"], "vicuna_v1") == processor.tokenize(
        only_image["conversations"], "vicuna_v1"
    )


# -- 2. an empty turn ------------------------------------------------------------------------------
@pytest.mark.parametrize("empty", [0, 1, 3])
def test_an_empty_turn_is_role_colon_and_labels_as_llava(processor, slow, empty):
    from sgeo.model.conversation import render

    turns = [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A box."},
             {"from": "human", "value": "Is it red?"}, {"from": "gpt", "value": "Yes."}]  # fmt: skip
    turns[empty]["value"] = ""
    text, spans = render("vicuna_v1", turns)
    role = "USER" if empty % 2 == 0 else "ASSISTANT"
    assert f"{role}:" in text and f"{role}: " not in text.replace(f"{role}: {turns[empty ^ 2]['value']}", "")
    assert_as_llava(processor, slow, {"image": "a.jpg", "conversations": turns})
    assert not any(text[a:b].startswith(" </s>") for a, b in spans)  # no empty answer supervised


# -- 3. eval prompts keep a question's trailing whitespace -----------------------------------------
@pytest.mark.parametrize("end", [" ", "\n", "  \n"])
def test_reference_prompt_keeps_the_questions_trailing_whitespace(processor, slow, end):
    """SpatialGeo's eval_spatial.py: `conv.append_message(conv.roles[0], question)` with the human turn as
    the bench writes it, then `tokenizer_image_token(conv.get_prompt())`."""
    from sgeo.benchmarks import build_prompt
    from sgeo.benchmarks.common import BenchItem
    from sgeo.benchmarks.spatialrgpt import answer_suffix

    human = "<image>\nIs the red box left of the chair?" + end
    qa_info = {"category": "left", "type": "qualitative"}
    item = BenchItem(
        question_id="q1", image="a.jpg", prompt="x", gt="left", qa_info=qa_info, raw_question=human
    )
    prompt = build_prompt(item, "spatialrgpt", "reference")
    system = LLAVA_V1_SYSTEM + answer_suffix(qa_info)
    template = processor.template(prompt.system)  # as `sgeo eval` asks (jobs/eval.py chat_template)
    got = processor.tokenize([{"from": "human", "value": prompt.human}], template, add_generation_prompt=True)
    want = llava_tokenizer_image_token(llava_get_prompt([("USER", human), ("ASSISTANT", None)], system), slow)
    want = [t for t in want for t in ([processor.image_token_id] * WIDTH if t == IMAGE_INDEX else [t])]
    assert prompt.system == system and got["input_ids"] == want


# -- 4. a literal <unk> ----------------------------------------------------------------------------
def test_a_literal_unk_is_dropped_from_training_as_llava_does(processor, slow):
    """`<unk>` is LLaVA's pad id: its collator masks it and its model drops masked tokens before the LLM (and
    the round check, counting it out, ignores every label). Its eval passes no mask: a prompt keeps it."""
    sample = {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is <unk> here?"},
                                                  {"from": "gpt", "value": "A box."}]}  # fmt: skip
    labels = assert_as_llava(processor, slow, sample)
    assert all(label == IGNORE for label in labels)
    unk = processor.tokenizer.unk_token_id
    assert unk not in processor.tokenize(sample["conversations"], "vicuna_v1")["input_ids"]
    prompt = processor.tokenize(sample["conversations"][:1], "vicuna_v1", add_generation_prompt=True)
    assert prompt["input_ids"].count(unk) == 1


# -- 5. samples LLaVA's data code trains -----------------------------------------------------------
def test_samples_llava_trains_are_trained_as_llava(processor, slow):
    gpt_first_with_image = {"image": "a.jpg", "conversations": [
        {"from": "gpt", "value": "<image>\nHello."}, {"from": "human", "value": "What is it?"},
        {"from": "gpt", "value": "A box."}]}  # fmt: skip
    two_in_one_turn = {"image": "a.jpg", "conversations": [
        {"from": "human", "value": "Compare <image> with <image>, please."}, {"from": "gpt", "value": "Same."}]}  # fmt: skip
    no_image_token = {"image": "a.jpg", "conversations": [
        {"from": "human", "value": "What is it?"}, {"from": "gpt", "value": "A box."}]}  # fmt: skip
    for sample in (gpt_first_with_image, two_in_one_turn, no_image_token):
        labels = assert_as_llava(processor, slow, sample)
        assert any(label != IGNORE for label in labels), sample


def test_samples_llava_cannot_train_are_refused_with_the_right_reason(processor):
    from sgeo.pipeline.samples import check_sample

    two_turns = {"image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."},
        {"from": "human", "value": "<image>\nAnd?"}, {"from": "gpt", "value": "B."}]}  # fmt: skip
    problem = check_sample(two_turns).problem
    assert problem and "in 2 turns" in problem and "\n" not in problem
    caption_without_image = {"image": "a.jpg", "conversations": [
        {"from": "human", "value": "Describe."}, {"from": "gpt", "value": "A box."}]}  # fmt: skip
    assert "no <image>" in check_sample(caption_without_image, needs_image=True, plain=True).problem
    # a prompt cut through its second image says so, not "an image"
    turn = [{"from": "human", "value": "<image>\n<image>\nWhat?"}]
    ids = processor.tokenize(turn, "vicuna_v1", add_generation_prompt=True)["input_ids"]
    second = ids.index(processor.image_token_id) + WIDTH  # where the second image starts
    small = processor.__class__(processor.image_processor, processor.tokenizer, WIDTH,
                                model_max_length=second + 2, tokenization="llava")  # fmt: skip
    with pytest.raises(ValueError, match="image 2 of its 2") as error:
        small.tokenize(turn, "vicuna_v1", add_generation_prompt=True)
    assert f"needs {len(ids)} tokens" in str(error.value)
