"""The protocols: `reference` prompts byte-identical to the benchmarks' own evaluation code, `sgeo` as before;
seeded sampling that a rerun repeats; several images per turn."""

from __future__ import annotations

import json

import pytest

from benchmark_fixtures import SPATIALRGPT_ROWS, SPATIALSCORE_ROWS, write_spatialrgpt, write_spatialscore
from sgeo.benchmarks import build_prompt, decoding_for, load_benchmark
from sgeo.errors import SgeoError
from sgeo.jobs.eval import EvalConfig, prompt_text, run_eval
from sgeo.model.conversation import normalise_turns

# SpatialGeo/llava/eval/benchmark/eval_spatial.py `eval_model`: conv_templates["llava_v1"] (conv_llava_v1's
# system, SeparatorStyle.TWO, sep " "), conv.system + the hint, then get_prompt() over [USER: the human turn,
# ASSISTANT: None] = system + " " + "USER: " + human + " " + "ASSISTANT:". Written out by hand:
LLAVA_V1 = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
HINT_DIRECTION = (
    "The answer should be presented in this format {# o'clock}, for example, {3 o'clock} or {12 o'clock}."
)
HINT_QUANTITATIVE = (
    "The answer should be presented in this format {# meters or feets or inches}, for example, "
    "{1.23 meters} or {0.56 feets} or {0.65 inches}."
)
HINT_QUALITATIVE = (
    "The answer should be presented in this format {# big or small or behind or front or left or right or "
    "tall or short or wide or thin or below or above}, for example,{A is bigger than B}."
)
EXPECTED_REFERENCE = {
    "d0": LLAVA_V1
    + HINT_DIRECTION
    + " USER: <image>\nIf you are at the red chair, where will you find the lamp? "
    "ASSISTANT:",
    "q0": LLAVA_V1 + HINT_QUANTITATIVE + " USER: <image>\nHow far is the red chair from the lamp? ASSISTANT:",
    "w0": LLAVA_V1 + HINT_QUANTITATIVE + " USER: <image>\nHow wide is the table? ASSISTANT:",
    "l0": LLAVA_V1
    + HINT_QUALITATIVE
    + " USER: <image>\nIs the red chair to the left of the lamp? ASSISTANT:",
    "t0": LLAVA_V1
    + HINT_QUALITATIVE
    + " USER: <image>\nWhich is taller, the lamp or the red chair? ASSISTANT:",
}
# every category of SpatialRGPT-Bench (evaluate_spatial_with_gpt4.py's lists) and the hint eval_spatial.py
# picks: category "direction" first, then type "quantitative", else the qualitative one
QUANTITATIVE = [
    "distance_data",
    "horizontal_distance_data",
    "vertical_distance_data",
    "width_data",
    "height_data",
]
QUALITATIVE = [
    f"{rel}_{form}"
    for rel in (
        "left",
        "right",
        "above",
        "below",
        "behind",
        "front",
        "tall",
        "short",
        "wide",
        "thin",
        "big",
        "small",
    )
    for form in ("predicate", "choice")
]


def test_reference_prompts_are_the_references_bytes(tmp_path):
    items = load_benchmark("spatialrgpt", write_spatialrgpt(tmp_path))
    assert {
        item.question_id: prompt_text(build_prompt(item, "spatialrgpt", "reference")) for item in items
    } == (EXPECTED_REFERENCE)
    # the sgeo protocol keeps today's prompt: the template's system prompt, the hint after the question
    sgeo = prompt_text(build_prompt(items[0], "spatialrgpt", "sgeo"))
    assert sgeo.endswith(
        "USER: <image>\nIf you are at the red chair, where will you find the lamp?\n"
        + HINT_DIRECTION
        + " ASSISTANT:"
    )
    assert HINT_DIRECTION not in sgeo.split(" USER: ")[0]


@pytest.mark.parametrize(
    ("qtype", "category", "hint"),
    [("quantitative", "direction", HINT_DIRECTION)]
    + [("quantitative", c, HINT_QUANTITATIVE) for c in QUANTITATIVE]
    + [("qualitative", c, HINT_QUALITATIVE) for c in QUALITATIVE],
)
def test_reference_hint_for_every_category(tmp_path, qtype, category, hint):
    row = {**SPATIALRGPT_ROWS[3], "qa_info": {"type": qtype, "category": category}}
    (tmp_path / "one.json").write_text(json.dumps([row]))
    (item,) = load_benchmark("spatialrgpt", tmp_path / "one.json")
    human = row["conversations"][0]["value"]
    assert (
        prompt_text(build_prompt(item, "spatialrgpt", "reference"))
        == f"{LLAVA_V1}{hint} USER: {human} ASSISTANT:"
    )


def test_spatialscore_reference_prompt_is_their_llava_prompt(tmp_path):
    # version_0/test_all-in-one.py, llava1_5-13b: messages [assistant: assistant_prompt, user: one image entry
    # per image + question] through llava-hf's chat template ("ROLE: ", then "<image>\n" per image, then
    # text + " ", then "ASSISTANT:"); MMIU's assistant_prompt is the multiple-choice one.
    items = load_benchmark("spatialscore", write_spatialscore(tmp_path))
    mmiu = next(it for it in items if it.qa_info["source"] == "MMIU")
    instruction = (
        "**Please select the most appropriate answer from options (A), (B), (C), (D), (E), or (F).**\n"
        "**Respond ONLY with the letter and its parentheses, for example: (A)**\n\nQuestion: "
    )
    question = SPATIALSCORE_ROWS[3]["question"]
    expected = f"ASSISTANT: {instruction} USER: <image>\n<image>\n{question} ASSISTANT:"
    assert prompt_text(build_prompt(mmiu, "spatialscore", "reference")) == expected
    vsi = next(it for it in items if it.question_id == "701")
    short = (
        "**Answer concisely with a single word, number, or option (e.g., yes, no, 5, 2.2, A).**\n\nQuestion: "
    )
    frames = "<image>\n" * 8
    assert prompt_text(build_prompt(vsi, "spatialscore", "reference")) == (
        f"ASSISTANT: {short} USER: {frames}How many ceiling light(s) are in this room? ASSISTANT:"
    )
    tiled = build_prompt(vsi, "spatialscore", "reference", multi_image="tile")
    assert tiled.human.count("<image>") == 1 and tiled.tile and len(tiled.images) == 8
    first = build_prompt(vsi, "spatialscore", "sgeo", multi_image="first")
    assert (
        first.images == (vsi.images[0],)
        and first.human == "<image>\nHow many ceiling light(s) are in this room?"
    )
    assert decoding_for("spatialscore", "reference").sample is False  # their TEMPERATURE 0.0
    assert decoding_for("spatialscore", "reference").max_new_tokens == 1024


def test_several_images_in_one_turn_go_to_its_front():
    turns = [{"from": "human", "value": "Compare <image> with <image>, please. "}]
    assert normalise_turns(turns) == [("human", "<image>\n<image>\nCompare  with , please.")]
    one = [{"from": "human", "value": "What is this?\n<image>"}]
    assert normalise_turns(one) == [("human", "<image>\nWhat is this?")]  # single image: as before


def test_seeded_sampling_gives_the_same_answers_on_a_rerun(tiny, tmp_path):
    data = write_spatialrgpt(tmp_path)
    decoding = decoding_for("spatialrgpt", "reference")
    assert (decoding.sample, decoding.temperature, decoding.top_k, decoding.max_new_tokens) == (
        True,
        0.2,
        50,
        128,
    )

    def answers(name: str, **options) -> dict[str, str]:
        config = EvalConfig(data=data, out=tmp_path / name, bench="spatialrgpt", max_new_tokens=8, **options)
        run_eval(config, loaded=tiny, quiet=True)
        records = [json.loads(line) for line in (tmp_path / name / "answers.jsonl").read_text().splitlines()]
        assert all(r["protocol"] == "reference" for r in records)
        assert {r["question_id"]: r["prompt"] for r in records} == EXPECTED_REFERENCE
        return {r["question_id"]: r["pred"] for r in records}

    first = answers("a", batch_size=5)
    assert answers("b", batch_size=5) == first  # a rerun
    assert answers("c", batch_size=2) == first  # per-item seeds: the batch an item is in does not matter
    assert answers("d", batch_size=5, seed=1) != first  # the seed does
    with pytest.raises(SgeoError, match="holds answers made with seed=0, this run has seed=1"):
        run_eval(
            EvalConfig(data=data, out=tmp_path / "a", bench="spatialrgpt", seed=1), loaded=tiny, quiet=True
        )
