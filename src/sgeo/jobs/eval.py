"""`sgeo eval`: run a model over a spatial VQA benchmark, append each answer as it goes, then score.

Items come from `load_benchmark`; each batch is greedy, left-padded generation from pixels (the model's own
towers). Every answer is appended to `answers.jsonl` at once, so a killed eval resumes where it stopped:
question ids already in the file are skipped. Scoring is the `score` job's, on the whole file.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SgeoError
from .ask import TEMPLATE, _until_eos, load_for_inference

ANSWERS_FILE = "answers.jsonl"


@dataclass
class EvalConfig:
    data: Path
    out: Path
    bench: str = "synthetic"
    image_root: Path | None = None
    model: str = "tiny"
    batch_size: int = 8
    max_new_tokens: int = 64
    limit: int | None = None
    device: str | None = None
    # The benchmark's answer-format instruction after each question (the reference's eval does this). Off
    # for a model trained only on synthetic QA, which never saw those instructions.
    format_hint: bool = True


def run_eval(config: EvalConfig, loaded: tuple | None = None, quiet: bool = False) -> dict[str, Any]:
    """Answer every item not yet in `out/answers.jsonl`, then score the file.

    `loaded` is an optional (model, processor) already in memory; otherwise `config.model` is loaded, and only
    if something is left to answer. Returns `score_answers`' result.
    """
    from ..pipeline.benchmarks import image_root, load_benchmark
    from .score import answered_ids, score_answers

    if config.batch_size < 1:
        raise SgeoError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.max_new_tokens < 1:
        raise SgeoError(f"--max-new-tokens must be at least 1, got {config.max_new_tokens}")
    if config.limit is not None and config.limit < 1:
        raise SgeoError(f"--limit must be at least 1, got {config.limit}")
    items = load_benchmark(config.bench, config.data)[: config.limit]
    root = Path(config.image_root) if config.image_root is not None else image_root(config.bench, config.data)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    answers = out / ANSWERS_FILE
    done = answered_ids(answers)
    todo = [item for item in items if item.question_id not in done]
    say = (lambda *_: None) if quiet else (lambda text: print(text, flush=True))
    say(
        f"eval: {len(items)} items of {config.data}: {len(items) - len(todo)} already answered in {answers}, "
        f"{len(todo)} to answer"
    )
    if todo:
        model, processor = loaded if loaded is not None else load_for_inference(config.model, config.device)
        hint, size, tokens = config.format_hint, config.batch_size, config.max_new_tokens
        answer_items(model, processor, todo, root, answers, size, tokens, format_hint=hint)
    result = score_answers(answers, config.bench, out)
    say(result["table"])
    say(f"eval: answers {answers}; scores {result['files']['scores']}, {result['files']['plot']}")
    return result


def answer_items(
    model,
    processor,
    items: list,
    image_root: Path,
    answers: Path,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    format_hint: bool = True,
) -> None:
    """Answer `items` in batches, appending one record per item to `answers` as each batch finishes.

    An image that cannot be read is recorded with `pred` "" and an `error`, and never reaches the model.
    """
    from tqdm.auto import tqdm

    from ..pipeline.images import load_image, resolve_inside
    from .score import append_answer

    with tqdm(total=len(items), desc="eval", unit="q", file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(items), batch_size):
            batch, images = [], []
            for item in items[start : start + batch_size]:
                try:
                    image, _ = load_image(resolve_inside(image_root, item.image))
                except SgeoError as error:  # unreadable, missing or outside the root
                    append_answer(answers, answer_record(item, "", error=str(error)))
                    continue
                batch.append(item)
                images.append(image)
            if batch:
                prompts = [
                    item.prompt if format_hint else item.extra.get("question", item.prompt) for item in batch
                ]
                preds = generate_answers(model, processor, prompts, images, max_new_tokens)
                for item, pred in zip(batch, preds, strict=True):
                    append_answer(answers, answer_record(item, pred))
            bar.update(min(batch_size, len(items) - start))


def generate_answers(
    model, processor, prompts: list[str], images: list, max_new_tokens: int = 64
) -> list[str]:
    """One greedy answer per (prompt, image): a left-padded batch through `model.generate`."""
    samples = [
        processor.tokenize(
            [{"from": "human", "value": f"<image>\n{prompt}"}], TEMPLATE, add_generation_prompt=True
        )
        for prompt in prompts
    ]
    batch = processor.pad(samples, padding_side="left")  # input_ids, attention_mask: [B, N]
    pixel_values = processor.preprocess_images(images)  # [B, 3, S, S]
    new_tokens = model.generate(
        batch["input_ids"].to(model.device),
        attention_mask=batch["attention_mask"].to(model.device),
        pixel_values=pixel_values,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=processor.tokenizer.pad_token_id,
    )  # [B, <= max_new_tokens]; fmt: skip
    eos = processor.tokenizer.eos_token_id
    return [
        processor.tokenizer.decode(_until_eos(row, eos), skip_special_tokens=True).strip()
        for row in new_tokens.tolist()
    ]


def answer_record(item, pred: str, error: str | None = None) -> dict[str, Any]:
    """One answers.jsonl line: what the scorer reads, plus everything the benchmark item carried."""
    record = item.to_record(pred)
    if error is not None:
        record["error"] = error
    return record
