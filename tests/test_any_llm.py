"""SpatialGeo on any chat LLM (issue 26): templates saved with the model and used by every command, `sgeo
compose` (a model from an LLM and the towers, the LLM referred to, not copied), stage 1 deciding which adapters
train, one feature store for every composed model, and the whole road through the CLI on tiny stand-ins of
Qwen2.5-7B-Instruct, Llama-3.1-8B-Instruct, Qwen3-8B and Vicuna-7B-v1.5 in their published layouts.

The towers are the tiny preset's; the LLMs are tests/llm_layouts.py's. Everything runs through the real loaders,
trainer (DeepSpeed), Ray extraction and CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import assert_one_line_error, run_sgeo_batch, serving
from llm_layouts import CHAT_FAMILIES, LLAMA31, QWEN3, QWEN25, VICUNA, chat_template, write_all
from sgeo.errors import SgeoError
from sgeo.model.chat_template import NO_CHAT_TEMPLATE, generation_eos_ids
from sgeo.model.conversation import IGNORE_INDEX, IMAGE_TOKEN, TEMPLATES

FAMILIES = (*CHAT_FAMILIES, VICUNA)
# what the LLMs' generation_config.json / tokenizer name as end-of-turn, terminator first
STOPS = {QWEN25: ["<|im_end|>", "<|endoftext|>"], QWEN3: ["<|im_end|>", "<|endoftext|>"],
         LLAMA31: ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"], VICUNA: ["</s>"]}  # fmt: skip
# strings of the templates that must never appear in an answer
TEMPLATE_TEXT = ("<|im_end|>", "<|im_start|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|begin_of_text|>", "</s>", "<think>", "</think>", "ASSISTANT:")  # fmt: skip
TURNS = [
    {"from": "human", "value": f"Where is the red box?\n{IMAGE_TOKEN}"},
    {"from": "gpt", "value": "Left of the cube."},
    {"from": "human", "value": "How tall is it?"},
    {"from": "gpt", "value": "About 1.5 meters."},
]


def short(repo_id: str) -> str:
    return repo_id.split("/")[1]


@pytest.fixture(scope="module")
def llms(tmp_path_factory) -> dict[str, Path]:
    return write_all(tmp_path_factory.mktemp("llms"))


@pytest.fixture(scope="module")
def towers(tiny_dir) -> dict[str, Path]:
    """The tiny preset's CLIP directory and MoGe checkpoint, as the preset writes them."""
    return {"clip": tiny_dir.parent / "clip", "moge": tiny_dir.parent / "moge" / "model.pt"}


def tower_options(towers: dict) -> list[str]:
    """SpatialGeo's towers as `sgeo compose --tower` takes them, in fusion order."""
    return [f"clip={towers['clip']}", f"moge={towers['moge']}"]


@pytest.fixture(scope="module")
def composed(llms, towers, tmp_path_factory) -> dict[str, Path]:
    from sgeo.model.compose import compose

    root = tmp_path_factory.mktemp("composed")
    out = {}
    for repo_id in FAMILIES:
        template = "vicuna_v1" if repo_id == VICUNA else None
        compose(str(llms[repo_id]), tower_options(towers), root / short(repo_id), template)
        out[repo_id] = root / short(repo_id)
    return out


@pytest.fixture(scope="module")
def loaded(composed) -> dict:
    """(model, processor) of each composed model, towers attached."""
    from sgeo.model import load_model

    return {repo_id: load_model(str(directory)) for repo_id, directory in composed.items()}


def _messages(turns: list[dict]) -> list[dict]:
    """The chat messages LLaVA turns mean, built here (image first in its turn, as LLaVA puts it)."""
    out = []
    for turn in turns:
        text = turn["value"]
        if IMAGE_TOKEN in text:
            text = f"{IMAGE_TOKEN}\n" + text.replace(IMAGE_TOKEN, "").strip()
        out.append({"role": "user" if turn["from"] == "human" else "assistant", "content": text})
    return out


# -- step 1: the template is the model's, saved with it -----------------------------------------------
def test_models_without_a_saved_template_keep_llavas(tiny, tiny_dir):
    """Every existing model (no "template" in processor_config.json) speaks vicuna_v1 exactly as before."""
    _, processor = tiny
    assert "template" not in json.loads((tiny_dir / "processor_config.json").read_text())
    assert processor.template_name == "vicuna_v1" and processor.template() is TEMPLATES["vicuna_v1"]
    assert processor.tokenize(TURNS) == processor.tokenize(TURNS, "vicuna_v1")
    assert processor.stop_token_ids == [processor.tokenizer.eos_token_id]
    replaced = processor.template(system="Be brief.")
    assert replaced.system == "Be brief." and replaced.sep2 == "</s>"
    with pytest.raises(SgeoError, match="plain template"):
        processor.resolve_template("plain", system="Be brief.")


@pytest.mark.parametrize("repo_id", FAMILIES, ids=short)
def test_composed_model_refers_to_its_llm_and_speaks_its_template(repo_id, composed, llms, loaded):
    from transformers import AutoModelForCausalLM

    directory, llm_dir = composed[repo_id], llms[repo_id]
    files = {p.name for p in directory.iterdir()}
    # the LLM is referred to, not copied: the only weights are the adapters'
    assert {f for f in files if f.endswith((".safetensors", ".bin"))} == {"adapters.safetensors"}
    config = json.loads((directory / "config.json").read_text())
    assert config["llm_path"] == str(llm_dir.resolve()) and config["trained_adapters"] == []
    settings = json.loads((directory / "processor_config.json").read_text())
    # absent means vicuna_v1, as for every model saved before templates were
    assert settings.get("template", "vicuna_v1") == ("vicuna_v1" if repo_id == VICUNA else "chat")
    assert settings["eos_token_ids"] == generation_eos_ids(llm_dir)
    if repo_id != VICUNA:  # the Jinja text saved with the tokenizer, as transformers saves it, verbatim
        assert (directory / "chat_template.jinja").read_text() == chat_template(repo_id)
    model, processor = loaded[repo_id]
    assert processor.tokenizer.convert_ids_to_tokens(processor.stop_token_ids) == STOPS[repo_id]
    # generate() stops at all of them
    eos = model.language_model.generation_config.eos_token_id
    assert set(processor.stop_token_ids) <= set([eos] if isinstance(eos, int) else eos)
    # and the continuous batch (sgeo serve, sgeo eval) at the very same ones: one rule for both
    from sgeo.model.generation import configured_eos_ids, stop_ids

    assert stop_ids(model, processor) == set(configured_eos_ids(model))
    # the LLM loaded is the LLM's own weights, from where they are
    own = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32).state_dict()
    mine = model.language_model.state_dict()
    assert set(own) <= set(mine) and all(torch.equal(own[k], mine[k]) for k in own)


def test_adapters_are_seeded(llms, towers, composed, tmp_path):
    from sgeo.model.compose import compose

    args = (str(llms[QWEN25]), tower_options(towers))
    compose(*args, tmp_path / "same")
    compose(*args, tmp_path / "other", seed=1)
    first = (composed[QWEN25] / "adapters.safetensors").read_bytes()
    assert (tmp_path / "same" / "adapters.safetensors").read_bytes() == first
    assert (tmp_path / "other" / "adapters.safetensors").read_bytes() != first


@pytest.mark.parametrize("repo_id", CHAT_FAMILIES, ids=short)
def test_tokens_are_apply_chat_templates_with_the_image_expanded(repo_id, loaded):
    """input_ids: transformers' own (one BOS: Llama-3.1's text holds <|begin_of_text|>), each <image> as the
    visual tokens; labels: exactly the answers and their end-of-turn token."""
    _, processor = loaded[repo_id]
    tokenizer = processor.tokenizer
    kwargs = {"enable_thinking": False} if repo_id == QWEN3 else {}
    reference = tokenizer.apply_chat_template(_messages(TURNS), tokenize=True, **kwargs)["input_ids"]
    expanded = []
    for token in reference:
        expanded += [token] * (processor.num_image_tokens if token == processor.image_token_id else 1)
    tokens = processor.tokenize(TURNS)
    assert tokens["input_ids"] == expanded
    supervised = [
        t for t, label in zip(tokens["input_ids"], tokens["labels"], strict=True) if label != IGNORE_INDEX
    ]
    terminator = STOPS[repo_id][0]
    assert tokenizer.decode(supervised) == f"Left of the cube.{terminator}About 1.5 meters.{terminator}"
    if repo_id == LLAMA31:
        assert tokens["input_ids"].count(tokenizer.convert_tokens_to_ids("<|begin_of_text|>")) == 1
    # the generation prompt ends where the answer begins (Qwen3: after its empty think block)
    prompt = processor.tokenize(TURNS[:1], add_generation_prompt=True)["input_ids"]
    text = tokenizer.decode(prompt)
    assert text.endswith({QWEN25: "<|im_start|>assistant\n", QWEN3: "<|im_start|>assistant\n<think>\n\n</think>\n\n",
                          LLAMA31: "<|start_header_id|>assistant<|end_header_id|>\n\n"}[repo_id])  # fmt: skip


def test_vicuna_speaks_llavas_v1_with_llavas_token_rule(loaded):
    """Vicuna has no chat template: it is composed with LLaVA-1.5's vicuna_v1 and LLaVA's own token rule."""
    _, processor = loaded[VICUNA]
    assert processor.tokenization == "llava" and processor.template() is TEMPLATES["vicuna_v1"]
    tokens = processor.tokenize(TURNS)
    supervised = [
        t for t, label in zip(tokens["input_ids"], tokens["labels"], strict=True) if label != IGNORE_INDEX
    ]
    answers = processor.tokenizer.decode(supervised).split(
        "</s>"
    )  # each answer and its </s>, as LLaVA supervises
    assert [a.strip() for a in answers] == ["Left of the cube.", "About 1.5 meters.", ""]


@pytest.mark.parametrize(
    "repo_id, stop", [(QWEN25, "<|endoftext|>"), (LLAMA31, "<|eom_id|>")], ids=["qwen25", "llama31"]
)
def test_answers_end_before_any_end_of_turn_token(repo_id, stop, loaded):
    """A stop id that is generation_config.json's but not the tokenizer's eos still ends the answer, and
    neither it nor any template text is in the answer."""
    from sgeo.inference.image_chat import ImageChat

    model, processor = loaded[repo_id]
    stop_id = processor.tokenizer.convert_tokens_to_ids(stop)
    assert stop_id != processor.tokenizer.eos_token_id
    chat = ImageChat(model, processor, Image.new("RGB", (60, 40), (200, 30, 30)))
    head = model.language_model.get_output_embeddings()
    bias = torch.zeros(head.out_features)
    bias[stop_id] = 1e4  # the model says its end-of-turn token first

    hook = head.register_forward_hook(lambda module, args, output: output + bias)
    try:
        result = chat.ask("Where is it?", max_new_tokens=6)
    finally:
        hook.remove()
    assert result["answer"] == "" and result["tokens"] == 0
    word = processor.tokenizer("Left", add_special_tokens=False)["input_ids"]
    terminator = processor.tokenizer.convert_tokens_to_ids(STOPS[repo_id][0])
    assert processor.decode_answer([*word, terminator, *word]) == "Left"


def test_system_message_replaces_the_templates(loaded):
    from sgeo.inference.image_chat import ImageChat

    model, processor = loaded[QWEN25]
    image = Image.new("RGB", (60, 40))
    default = ImageChat(model, processor, image)
    mine = ImageChat(model, processor, image, system="Answer in metres.")
    turns = [{"from": "human", "value": "Where?"}]
    text = processor.tokenizer.decode(
        processor.tokenize(turns, mine.template, add_generation_prompt=True)["input_ids"]
    )
    assert text.startswith("<|im_start|>system\nAnswer in metres.<|im_end|>") and "Alibaba" not in text
    text = processor.tokenizer.decode(
        processor.tokenize(turns, default.template, add_generation_prompt=True)["input_ids"]
    )
    assert "You are Qwen, created by Alibaba Cloud." in text


def test_eval_system_message_is_asked_recorded_and_compared(loaded, synthetic_root, tmp_path):
    from dataclasses import replace

    from sgeo.jobs.eval import EvalConfig, run_eval

    config = EvalConfig(data=synthetic_root / "eval" / "bench.json", out=tmp_path / "e", limit=1, max_new_tokens=2,
                        batch_size=1, system="Answer in metres.")  # fmt: skip
    run_eval(config, loaded=loaded[QWEN25], quiet=True)
    (record,) = [json.loads(line) for line in (tmp_path / "e" / "answers.jsonl").read_text().splitlines()]
    assert record["system"] == "Answer in metres."
    assert record["prompt"].startswith(
        "<|im_start|>system\nAnswer in metres.<|im_end|>\n<|im_start|>user\n<image>"
    )
    # resumed without it: those answers were asked another way
    with pytest.raises(SgeoError, match="system='Answer in metres.', this run has system=None"):
        run_eval(replace(config, system=None), loaded=loaded[QWEN25], quiet=True)
    # the reference protocol asks with the benchmark's own system prompt
    with pytest.raises(SgeoError, match="--system applies to --protocol sgeo"):
        run_eval(replace(config, bench="spatialrgpt", out=tmp_path / "r"), loaded=loaded[QWEN25], quiet=True)


def test_qwen3_thinking_block_is_not_an_answer(loaded):
    _, processor = loaded[QWEN3]
    ids = processor.tokenizer("<think>\nhmm\n</think>\n\nLeft.<|im_end|>", add_special_tokens=False)[
        "input_ids"
    ]
    assert processor.decode_answer(ids) == "Left."


# -- step 3: stage 1 decides which adapters train --------------------------------------------------------
def test_stage1_trains_the_adapters_not_yet_trained(composed, tiny_dir, llms, towers, tmp_path):
    from sgeo.jobs.info import model_info
    from sgeo.model import configure_stage, load_model
    from sgeo.model.compose import compose

    def stage1(directory) -> set[str]:
        model, _ = load_model(str(directory), load_towers=False)
        return {name.split(".")[0] for name in configure_stage(model, 1)}

    # a composed model: both adapters (LLaVA-1.5's pretraining of its projector); a LLaVA-1.5 start: MoGe's
    assert stage1(composed[QWEN25]) == {"clip_adapter", "moge_adapter"}
    assert stage1(tiny_dir) == {"moge_adapter"}
    llava = _llava_checkpoint(tmp_path / "llava", clip_width=64, llm_width=64)
    compose(str(llms[QWEN25]), tower_options(towers), tmp_path / "m", clip_adapter=str(llava))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["trained_adapters"] == ["clip"]
    assert stage1(tmp_path / "m") == {"moge_adapter"}
    model, _ = load_model(str(tmp_path / "m"), load_towers=False)
    from safetensors.torch import load_file

    theirs = load_file(llava / "model.safetensors")
    assert torch.equal(model.clip_adapter[0].weight, theirs["model.mm_projector.0.weight"])
    counts = model_info(str(composed[QWEN25]))["parameters"]
    assert counts["trainable_stage1"] == 8320 + 115200  # both adapters at the tiny widths


def _llava_checkpoint(directory: Path, clip_width: int, llm_width: int) -> Path:
    """A LLaVA-1.5 checkpoint's CLIP adapter as liuhaotian/llava-v1.5-7b holds it (`model.mm_projector.{0,2}`)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    config = {"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", "mm_hidden_size": clip_width,
              "hidden_size": llm_width, "mm_projector_type": "mlp2x_gelu", "mm_vision_tower": "openai/clip"}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    torch.manual_seed(5)
    state = {"model.mm_projector.0.weight": torch.randn(llm_width, clip_width), "model.mm_projector.0.bias": torch.randn(llm_width),
             "model.mm_projector.2.weight": torch.randn(llm_width, llm_width), "model.mm_projector.2.bias": torch.randn(llm_width)}  # fmt: skip
    save_file(state, directory / "model.safetensors")
    return directory


def test_answers_with_thinking_blocks_are_refused_before_training(composed, tiny_store, tmp_path):
    """Qwen3's template would move an answer's <think> block out of it: such a sample is refused by name before
    the first step, and --skip-invalid trains without it. (The tiny preset's store serves the composed model:
    same towers, same preprocessing.)"""
    samples = json.loads(Path(tiny_store["stage2"]).read_text())[:4]
    samples[1]["conversations"][3]["value"] = "<think>\nIt is on the left.\n</think>\n\nLeft."
    data = tmp_path / "thinking.json"
    data.write_text(json.dumps(samples))
    args = ["train", "--stage", "2", "--data", data, "--store", tiny_store["store"], "--model", composed[QWEN3],
            "--batch-size", "1", "--grad-accum", "1", "--max-steps", "1", "--num-workers", "0", "--lora-r", "4",
            "--lora-alpha", "8"]  # fmt: skip
    refused, trained = run_sgeo_batch([[*args, "--out", tmp_path / "refused"],
                                       [*args, "--out", tmp_path / "trained", "--skip-invalid"]])  # fmt: skip
    assert_one_line_error(refused, f"sample {samples[1]['id']}: ", "<think> block", "--skip-invalid")
    assert not (tmp_path / "refused" / "adapters.safetensors").exists()
    assert trained["code"] == 0, trained["stderr"][-2000:]
    assert "3 samples" in trained["stderr"] and (tmp_path / "trained" / "lora").is_dir()


# -- step 2: compose's refusals, one line each ------------------------------------------------------------
def test_compose_refusals_and_info(llms, towers, tmp_path, monkeypatch):
    qwen = llms[QWEN25]
    broken = tmp_path / "qwen-user-only"  # a template that never writes the assistant's turn
    shutil.copytree(qwen, broken)
    tokenizer_config = json.loads((broken / "tokenizer_config.json").read_text())
    tokenizer_config["chat_template"] = (
        "{% for m in messages %}{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    (broken / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    narrow = _llava_checkpoint(tmp_path / "llava-narrow", clip_width=32, llm_width=64)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    parts = [
        "--tower",
        f"clip={towers['clip']}",
        "--tower",
        f"moge={towers['moge'].parent}",
    ]  # MoGe's dir too
    cases = [
        (["--llm", llms[VICUNA]], [NO_CHAT_TEMPLATE]),
        (["--llm", broken], ["cannot render an assistant turn"]),
        (["--llm", qwen, "--clip-adapter", narrow], ["--clip-adapter", "CLIP width 64 -> LLM width 64"]),
        (["--llm", qwen, "--template", "plain"], ["stage 1's"]),
        (["--llm", qwen, "--template", "vicuna_v1"], ["</s>", "<|im_end|>"]),
        (["--llm", tmp_path / "nowhere"], ["neither a directory"]),
        (["--llm", towers["clip"]], ["not a causal LM"]),
    ]
    commands = [
        ["compose", *args, *parts, "--out", tmp_path / f"refused{i}"] for i, (args, _) in enumerate(cases)
    ]
    commands += [
        ["compose", "--llm", qwen, *parts, "--out", tmp_path / "taken"],
        ["compose", "--llm", llms[LLAMA31], *parts, "--out", tmp_path / "llama"],
        ["info", "--model", tmp_path / "llama", "--json"],
        [
            "compose",
            "--llm",
            QWEN25,
            *parts,
            "--out",
            tmp_path / "from-hub",
        ],  # a hub id, found in the HF cache
    ]
    from reference_layouts import put_in_hf_cache

    hf_home = tmp_path / "hf_home"
    put_in_hf_cache(hf_home, QWEN25, {p.name: p for p in qwen.iterdir()})
    results = run_sgeo_batch(commands, env={"HF_HOME": str(hf_home)})
    hub = results.pop()
    assert hub["code"] == 0, hub["stderr"][-2000:]
    from huggingface_hub import constants

    from sgeo.model import load_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))  # what HF_HOME says in a new process
    # the config keeps the hub id (portable), and the model loads from the cache
    assert json.loads((tmp_path / "from-hub" / "config.json").read_text())["llm_path"] == QWEN25
    model, processor = load_model(str(tmp_path / "from-hub"), load_towers=False)
    assert processor.template_name == "chat" and model.config.llm_path == QWEN25
    for (_, fragments), result in zip(cases, results, strict=False):
        assert_one_line_error(result, *fragments)
        assert not Path(result["args"][-1]).exists()  # nothing written
    assert_one_line_error(results[len(cases)], "not an empty directory")
    assert results[-2]["code"] == 0 and "<|eot_id|>" in results[-2]["stdout"]
    info = json.loads(results[-1]["stdout"])
    assert results[-1]["code"] == 0 and info["weights"]["llm"] == str(llms[LLAMA31].resolve())
    assert info["parameters"]["llm"] > 0


# -- step 4: the whole road through the CLI, four families, one store --------------------------------------
def test_compose_extract_train_ask_eval_for_four_families(llms, towers, synthetic_root, tmp_path):
    work = tmp_path
    store = work / "store.zarr"
    bench = synthetic_root / "eval" / "bench.json"
    image = synthetic_root / "images" / "000000.png"
    commands = []
    for repo_id in FAMILIES:
        name = short(repo_id)
        template = ["--template", "vicuna_v1"] if repo_id == VICUNA else []
        commands.append(["compose", "--llm", llms[repo_id], "--tower", f"clip={towers['clip']}",
                         "--tower", f"moge={towers['moge']}", "--out", work / name, *template])  # fmt: skip
    for repo_id in FAMILIES:  # one store: the first extracts, the others find every shard done
        commands.append(["extract", "--root", synthetic_root, "--store", store, "--model", work / short(repo_id),
                         "--num-cpus", "2", "--shard-size", "8", "--batch-size", "8"])  # fmt: skip
    for repo_id in FAMILIES:
        name = short(repo_id)
        commands += [
            ["train", "--stage", "1", "--data", synthetic_root / "captions.json", "--store", store, "--model",
             work / name, "--out", work / f"{name}-s1", "--batch-size", "4", "--grad-accum", "1", "--max-steps",
             "1", "--num-workers", "0"],
            ["train", "--stage", "2", "--data", synthetic_root / "spatial_qa.json", "--store", store, "--model",
             work / f"{name}-s1", "--out", work / f"{name}-s2", "--batch-size", "2", "--grad-accum", "1",
             "--max-steps", "1", "--num-workers", "0", "--lora-r", "4", "--lora-alpha", "8"],
            ["ask", image, "Where is the red cylinder?", "--model", work / f"{name}-s2", "--json",
             "--max-new-tokens", "6", "--temperature", "0", *(["--system", "Be brief."] if repo_id == QWEN25 else [])],
            ["eval", "--data", bench, "--model", work / f"{name}-s2", "--out", work / f"{name}-eval", "--limit", "2",
             "--max-new-tokens", "4", "--batch-size", "2"],
        ]  # fmt: skip
    results = run_sgeo_batch(commands, timeout=1500)
    for result in results:
        assert result["code"] == 0 and "Traceback" not in result["stderr"], (
            result["args"],
            result["stderr"][-3000:],
        )
    extracts = [r for r in results if r["args"][0] == "extract"]
    assert "extracted 24 images" in extracts[0]["stdout"]
    assert all("extracted 0 images" in r["stdout"] and "24 skipped (already committed)" in r["stdout"]
               for r in extracts[1:])  # fmt: skip
    firsts = {QWEN25: "<|im_start|>system\nYou are Qwen", QWEN3: "<|im_start|>user\n<image>",
              LLAMA31: "<|begin_of_text|><|start_header_id|>system", VICUNA: "A chat between a curious user"}  # fmt: skip
    for repo_id in FAMILIES:
        name = short(repo_id)
        s1, s2 = work / f"{name}-s1", work / f"{name}-s2"
        # stage 1: plain captions, both adapters; the output still refers to the LLM and records what trained
        assert json.loads((s1 / "train_config.json").read_text())["template"] == "plain"
        assert json.loads((s1 / "trainable.json").read_text())["adapters"] == ["clip", "moge"]
        config = json.loads((s1 / "config.json").read_text())
        assert config["trained_adapters"] == ["clip", "moge"] and config["llm_path"] == str(
            llms[repo_id].resolve()
        )
        assert not list(s1.glob("model*.safetensors"))
        # stage 2: LoRA in the LLM's own template
        template = "vicuna_v1" if repo_id == VICUNA else "chat"
        assert json.loads((s2 / "train_config.json").read_text())["template"] == template
        assert (s2 / "lora" / "adapter_model.safetensors").is_file() and not list(
            s2.glob("model*.safetensors")
        )
        # ask: an answer without any stop token or template text
        asked = next(r for r in results if r["args"][0] == "ask" and r["args"][4] == str(s2))
        answer = json.loads(asked["stdout"])
        assert answer["tokens"] <= 6 and not any(text in answer["answer"] for text in TEMPLATE_TEXT), answer
        # eval: the prompts are the family's own template
        records = [
            json.loads(line) for line in (work / f"{name}-eval" / "answers.jsonl").read_text().splitlines()
        ]
        assert len(records) == 2 and all(r["prompt"].startswith(firsts[repo_id]) for r in records)
        assert not any(text in r["pred"] for r in records for text in TEMPLATE_TEXT)
    qwen_asked = next(r for r in results if r["args"][0] == "ask" and "--system" in r["args"])
    assert qwen_asked["code"] == 0
    for repo_id in FAMILIES:  # sgeo serve answers an OpenAI-style request in the family's template
        answer = _served_answer(work / f"{short(repo_id)}-s2", image, work / f"{short(repo_id)}-serve")
        assert answer["choices"][0]["finish_reason"] in ("stop", "length"), answer
        content = answer["choices"][0]["message"]["content"]
        assert isinstance(content, str) and not any(text in content for text in TEMPLATE_TEXT), answer


def _served_answer(model: Path, image: Path, work: Path) -> dict:
    """Start `sgeo serve --model MODEL`, ask one question about `image` over HTTP, stop the server."""
    import base64
    import urllib.request

    work.mkdir()
    with serving(["--model", model], work) as (url, _):
        data_url = f"data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}"
        body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Where is the red box?"},
                {"type": "image_url", "image_url": {"url": data_url}}]}], "max_tokens": 6, "temperature": 0}  # fmt: skip
        request = urllib.request.Request(
            f"{url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())


# -- learning: two families from one store ------------------------------------------------------------------
def test_two_families_learn_the_floor_colour_from_one_store(llms, towers, tmp_path):
    """As tests/test_quickstart.py's tiny model: each of a Llama-3.1-style and a Qwen2.5-style composed model,
    trained in its own chat template from the same store, names the floor's colour on held-out images more
    often than the training split's most common floor. A template that supervised the wrong tokens, features
    from the wrong rows or a model that did not see the image drop to the constant."""
    from collections import Counter

    from sgeo.jobs.eval import EvalConfig, run_eval
    from sgeo.jobs.extract import ExtractConfig, run_extract
    from sgeo.jobs.train import TrainConfig, run_train
    from sgeo.model.compose import compose
    from sgeo.synthetic import generate_synthetic

    data, store = tmp_path / "data", str(tmp_path / "features.zarr")
    generate_synthetic(data, 300, seed=0, n_eval=40)
    meta = json.loads((data / "meta.json").read_text())
    prompt = "Describe the image briefly."
    bench = [
        {"id": str(i), "file_path": m["image"], "text_q": prompt,
         "qa_info": {"category": "floor", "type": "qualitative"},
         "conversations": [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": m["floor"]}]}
        for i, m in enumerate(meta["eval"])
    ]  # fmt: skip
    (data / "eval" / "floors.json").write_text(json.dumps(bench))
    constant_floor = Counter(m["floor"] for m in meta["train"]).most_common(1)[0][0]
    for k, repo_id in enumerate((LLAMA31, QWEN25)):
        model = tmp_path / short(repo_id)
        compose(str(llms[repo_id]), tower_options(towers), model)
        summary = run_extract(ExtractConfig(root=data, store=store, dataset="synthetic", model=str(model),
                                            batch_size=16, shard_size=64))  # fmt: skip
        assert summary.ok == (len(meta["train"]) if k == 0 else 0)  # one store for both
        trained = tmp_path / f"{short(repo_id)}-trained"
        run_train(TrainConfig(stage=2, data=data / "captions.json", out=trained, store=store, model=str(model),
                              epochs=8.0, lr=3e-3, adapter_lr=1e-3, lora_r=0, batch_size=8, grad_accum=1,
                              num_workers=0, gradient_checkpointing=False))  # fmt: skip
        out = tmp_path / f"{short(repo_id)}-eval"
        run_eval(EvalConfig(data=data / "eval" / "floors.json", out=out, bench="synthetic", model=str(trained),
                            format_hint=False, batch_size=16, max_new_tokens=24), quiet=True)  # fmt: skip
        answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
        assert len(answers) == 40
        score = sum(f" {a['gt']} floor" in a["pred"] for a in answers) / len(answers)
        constant = sum(a["gt"] == constant_floor for a in answers) / len(answers)
        print(f"{repo_id}: floor colour on held-out images: trained {score:.0%}, constant {constant:.0%}")
        assert score > constant
