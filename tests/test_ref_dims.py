"""The ref-dims preset: the reference's shapes counted without writing them, and the shared random-init writer in
the ref-dims formats (bf16 LLM and adapters, fp32 towers, LLaVA's SentencePiece files with `<image>` just past
the vocabulary, LLaVA's tokenization) at a small size, so it runs in seconds."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_sgeo
from sgeo.model.presets import REF_DIMS_VERSION
from sgeo.model.random_init.sizes import TINY

SMALL_LLAMA = replace(  # the ref-dims formats at tiny shapes
    TINY, tokenizer="llama", vocab_size=1000, weights_dtype="bfloat16", llm_rms_norm_eps=1e-5, llm_max_positions=4096,
)  # fmt: skip


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_info_gives_the_reference_counts_without_writing(tmp_path, monkeypatch):
    from sgeo.jobs.info import model_info, store_plan

    monkeypatch.setenv("SGEO_HOME", str(tmp_path))
    monkeypatch.delenv("SGEO_REF_DIMS_LAYERS", raising=False)
    ours, reference = model_info("ref-dims"), model_info("spatialgeo-7b")
    for part in ("clip_tower", "moge_tower", "clip_adapter", "moge_adapter"):
        assert ours["parameters"][part] == reference["parameters"][part], part
    counts = ours["parameters"]
    # CLIP computes 23 of its 24 blocks (LLaVA reads block 23): 290.9M of CLIP-L/14's 303.5M
    assert round(counts["clip_tower"] / 1e6, 1) == 290.9 and round(counts["moge_tower"] / 1e6, 1) == 304.4
    assert (
        round(counts["clip_adapter"] / 1e6, 2) == 20.98
        and counts["moge_adapter"] == 4 * counts["clip_adapter"]
    )
    assert ours["visual_tokens_per_image"] == 1152
    assert ours["features"] == {"clip": [576, 1024], "moge": [4, 576, 1024]}
    assert ours["weights"]["written"] is False and ours["weights"]["directory"].endswith(
        f"{REF_DIMS_VERSION}-2l/spatialgeo"
    )
    bf16 = store_plan("ref-dims", 1, "bf16")["encodings"]["bf16"]
    assert bf16["bytes_per_image"] == 576 * 1024 * 2 + 4 * 576 * 1024 * 2  # 5.9 MB
    # the depth is the only thing left out: at Vicuna-7B's 32 layers the LLM is the reference's too
    monkeypatch.setenv("SGEO_REF_DIMS_LAYERS", "32")
    deep = model_info("ref-dims")
    assert deep["parameters"]["llm"] == reference["parameters"]["llm"]
    assert deep["weights"]["directory"].endswith(f"{REF_DIMS_VERSION}-32l/spatialgeo")
    assert not (tmp_path / "presets").exists()


def test_bad_depth_is_a_one_line_error(tmp_path, monkeypatch):
    from sgeo.errors import SgeoError
    from sgeo.model.presets import ref_dims_layers

    for value in ("0", "-1", "2.5"):
        monkeypatch.setenv("SGEO_REF_DIMS_LAYERS", value)
        with pytest.raises(SgeoError, match="SGEO_REF_DIMS_LAYERS"):
            ref_dims_layers()
    result = run_sgeo(
        "info", "--model", "ref-dims", env={"SGEO_HOME": str(tmp_path), "SGEO_REF_DIMS_LAYERS": "two"}
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines() == [result.stderr.strip()]
        and "SGEO_REF_DIMS_LAYERS" in result.stderr
    )


@pytest.fixture(scope="module")
def small_llama(tmp_path_factory) -> Path:
    from sgeo.model.random_init.writer import write_random_init

    return write_random_init(tmp_path_factory.mktemp("small-llama"), sizes=SMALL_LLAMA).parent


def test_ref_dims_formats_are_written_as_released(small_llama):
    from safetensors import safe_open

    from sgeo.model.configuration import SpatialGeoConfig
    from sgeo.model.processing import SpatialGeoProcessor
    from sgeo.model.random_init.configs import random_init_config

    def dtypes(path: Path) -> set[str]:
        with safe_open(path, "pt") as handle:
            names = handle.keys()  # a safetensors handle is not iterable
            return {str(handle.get_slice(name).get_dtype()) for name in names}

    assert dtypes(small_llama / "clip" / "model.safetensors") == {"F32"}  # as openai's CLIP ships
    assert dtypes(small_llama / "llm" / "model.safetensors") == {"BF16"}
    assert dtypes(small_llama / "spatialgeo" / "model.safetensors") == {"BF16"}
    llm = small_llama / "llm"
    assert {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in llm.iterdir()
    }
    assert not (llm / "tokenizer.json").exists()  # LLaVA-1.5 ships the SentencePiece model only
    assert json.loads((llm / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizer"
    processor = SpatialGeoProcessor.from_pretrained(small_llama / "spatialgeo")
    assert processor.tokenization == "llava" and processor.image_token_id == 1000  # just past the 1000 pieces
    assert processor.tokenizer.legacy is False
    # info's geometry is exactly what the writer writes (save-time fields aside)
    written = SpatialGeoConfig.from_pretrained(small_llama / "spatialgeo").to_diff_dict()
    counted = random_init_config(SMALL_LLAMA).to_diff_dict()
    for config in (written, counted):
        config.pop("architectures", None), config.pop("dtype", None)
        config["text_config"].pop("architectures", None), config["text_config"].pop("dtype", None)
        for tower in config["vision_towers"]:  # the source is where the writer put the files
            tower.pop("source")
    assert written == counted


def test_ref_dims_writer_is_deterministic_and_trains(small_llama, tmp_path):
    import torch

    from sgeo.model import load_model
    from sgeo.model.random_init.writer import write_random_init

    again = write_random_init(tmp_path / "again", sizes=SMALL_LLAMA).parent
    assert _tree(again) == _tree(small_llama)
    model, processor = load_model(str(small_llama / "spatialgeo"), dtype=torch.float32)
    turns = [
        {"from": "human", "value": "<image>\nHow far is the red box?"},
        {"from": "gpt", "value": "About 2 m."},
    ]
    batch = processor(turns, images=[Image.new("RGB", (40, 30))])
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == model.config.num_image_tokens
    out = model(batch["input_ids"], labels=batch["labels"], pixel_values=batch["pixel_values"])
    assert torch.isfinite(out.loss) and int((batch["labels"] != -100).sum()) > 0


def test_eval_with_llavas_tokenization_in_bf16(small_llama, synthetic_root, tmp_path):
    """Eval's prompts (a Template object) through LLaVA's tokenization, bf16 on CPU: every item answered."""
    from sgeo.jobs.eval import EvalConfig, run_eval
    from sgeo.pipeline.answers import read_answers

    config = EvalConfig(data=synthetic_root / "eval" / "bench.json", out=tmp_path, bench="synthetic",
                        model=str(small_llama / "spatialgeo"), limit=2, batch_size=2, max_new_tokens=3,
                        precision="bf16")  # fmt: skip
    run_eval(config, quiet=True)
    answers = read_answers(tmp_path / "answers.jsonl")
    assert len(answers) == 2 and not [a for a in answers if a.get("skipped") or a.get("error")], answers
