"""A run's data: the JSON samples checked and joined to the store's rows (or the image files online), the
pixels' aspect mode, the store's fingerprint checked against the model, and the seeded batch plan."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sgeo.errors import SgeoError

from .log import log
from .recipe import STAGE_RECIPES, TrainSettings


@dataclass
class Data:
    dataset: object  # TrainingDataset
    plan: object  # BatchPlan
    total_steps: int


def prepare_data(settings: TrainSettings, features, processor, world_size: int) -> Data:
    """Samples -> dataset and batch plan; every sample is checked before the first step (one-line refusal)."""
    from sgeo.pipeline.training.batches import BatchPlan
    from sgeo.pipeline.training.checks import images_past_the_cut, unsupervised_samples
    from sgeo.pipeline.training.dataset import TrainingDataset

    join = _join(settings, features)
    # the template as an object: a chat template ("chat") is the model's tokenizer's, which only the processor has
    template = processor.resolve_template(settings.template)
    # samples that leave by position, never by id (ids may repeat, and an id-less sample is named by its JSON
    # position); those the template cannot render go first, as nothing below can render them either
    thinking = answers_with_thinking(join, template)
    join.invalid += [(join.name(k), why) for k, why in thinking]
    join.drop(k for k, _ in thinking)
    past_the_cut = images_past_the_cut(join, processor, template)
    join.invalid += [(join.name(k), why) for k, why in past_the_cut]
    if join.invalid:
        if not settings.skip_invalid:
            raise SgeoError(join.refusal(settings.data))
        # the samples join_samples refused never joined
        join.drop(k for k, _ in past_the_cut)
        join.counts["invalid"] = len(join.invalid)
    log(f"data {settings.data}: {join.summary()}")
    if unsupervised := unsupervised_samples(join, processor, template):
        log(
            f"warning: {len(unsupervised[0])} of {unsupervised[1]} checked samples have every label ignored (e.g. "
            f"{unsupervised[0][0]}): LLaVA's rule for rounds whose tokens do not line up with the template; check "
            "that the tokenizer is the one the model was trained with"
        )
    dataset = TrainingDataset(join, processor, template, settings.image_root if settings.online else None)
    plan = BatchPlan(len(dataset), settings.batch_size, world_size, settings.grad_accum, settings.seed,
                     lengths=tuple(dataset.lengths()) if settings.group_by_length else None,
                     has_image=tuple(dataset.has_image()))  # fmt: skip
    if plan.steps_per_epoch == 0:
        raise SgeoError(
            f"{len(dataset)} usable samples do not fill one step of global batch {settings.global_batch}; "
            "lower --global-batch (or --batch-size / --grad-accum)"
        )
    return Data(dataset, plan, settings.max_steps or math.ceil(settings.epochs * plan.steps_per_epoch))


THINKING = ("<think>", "</think>")


def answers_with_thinking(join, template) -> list[tuple[int, str]]:
    """(position, why) of the samples a chat template cannot train as written: an answer holding a thinking
    block, which a thinking template (Qwen3) moves out of the answer or drops. Only those samples are rendered
    (a string scan finds them), so the check costs nothing on data without them."""
    from sgeo.model.chat_template import ChatTemplate

    if not isinstance(template, ChatTemplate):
        return []
    found = []
    for k, sample in enumerate(join.samples):
        answers = sample["conversations"][1::2]
        if any(mark in str(turn.get("value") or "") for turn in answers for mark in THINKING):
            try:
                template.render(sample["conversations"])
            except ValueError as error:  # ChatTemplateError: one line saying why
                found.append((k, str(error)))
    return found


def aspect_mode(settings: TrainSettings, features) -> str:
    """The pixels' aspect mode: the store's own (cached); online --image-aspect-ratio, else the stage's as in
    LLaVA's scripts (pretraining: CLIP's resize + centre crop; finetuning: pad to a square)."""
    if features is not None and not settings.online:
        mode = (features.fingerprint.get("preprocessing") or {}).get("image_aspect_ratio")
        if settings.image_aspect_ratio and mode and settings.image_aspect_ratio != mode:
            raise SgeoError(
                f"--image-aspect-ratio {settings.image_aspect_ratio} but the store was extracted with {mode}; "
                "drop the option (a cached run uses the store's pixels) or re-extract"
            )
        if mode:
            return mode
    return settings.image_aspect_ratio or STAGE_RECIPES[settings.stage].image_aspect_ratio


def check_features(features, resolved_model, processor) -> None:
    """Refuse stores made by other towers or preprocessing; each store's encoding is its own business."""
    from sgeo.model.tower_fingerprint import tower_fingerprint
    from sgeo.pipeline.feature_set import check_feature_set

    expected = {
        spec.name: tower_fingerprint(spec, resolved_model.towers[spec.name].path)
        for spec in resolved_model.config.towers
    }
    check_feature_set(features, expected, processor.preprocessing_spec())


def _join(settings: TrainSettings, features):
    from sgeo.pipeline.images import PathEscapeError, resolve_inside
    from sgeo.pipeline.training.join import join_samples, load_samples, manifest_statuses

    samples = load_samples(settings.data)
    statuses = manifest_statuses(features) if features is not None else None

    def exists(image_id: str) -> bool:
        try:
            return resolve_inside(settings.image_root, image_id).is_file()
        except PathEscapeError:
            return False

    return join_samples(samples, statuses, needs_image=settings.template == "plain",
                        exists=exists if settings.online else None)  # fmt: skip
