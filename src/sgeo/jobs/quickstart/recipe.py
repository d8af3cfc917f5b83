"""The quickstart's recipe: sizes, schedule and question set (`QuickstartRecipe`; `QUICKSTART` the default,
`FULL_QUICKSTART` the whole question mix), checked in one line before any step runs (`check_options`)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...errors import SgeoError


@dataclass(frozen=True)
class QuickstartRecipe:
    """Sizes and training hyper-parameters of the quickstart (measured on 2 CPU cores).

    The reference recipe (1 epoch, global batch 256 / 128, LoRA) does not fit a random-init model: one epoch is
    a few optimizer steps, and a random-init LLM's frozen output head caps what LoRA can reach. So stage 2
    trains the whole LLM (`lora_r=0`) at a small global batch and a high learning rate, on many images (2000:
    with 200 the model memorised its images). The model is the `demo` preset: tiny's parts, but towers whose
    patch tokens say where they are (sin-cos position embeddings) and a 128-wide LLM at fan-in init, without
    which a tiny model cannot find an object's patches at all (bench/grounding_probe.py).

    What to ask, measured (README, "The quickstart"): trained alone on one relation for 1000-2000 steps, the
    model answers it on held-out images (bench/relation_answer_probe.py: 90-99 %); on the full mix of 28
    categories in this budget it sits near the best constant answer, not above it. So the default asks the
    predicates and choices of the relations its budget teaches (`relations`, with a "where" turn per
    object), and `FULL_QUICKSTART` (`--full`) the whole mix.
    """

    model: str = "demo"
    n: int = 2000  # training images
    # held-out images, 4 questions each (~36 per category): with 100 (~14 per category) one answer moved a
    # category by 7 points and the constant's quantitative score by 5 (55.6 on 90 questions, 47.4 on 4000)
    n_eval: int | None = 250
    stage1_epochs: float = 1.0  # stage 1 only aligns the MoGe adapter; it matters little here
    stage1_global_batch: int = 16
    stage1_lr: float = 1e-3
    # 12 epochs of 2000 images = 1500 steps of 16: left/right alone at 1000 steps learned in one run of the
    # relation probe; its loss falls a second time around step 400-800, which 1500 steps catch with room
    stage2_epochs: float = 12.0
    stage2_global_batch: int = 16
    stage2_lr: float = 2e-3  # the LLM's learning rate
    stage2_adapter_lr: float = 2e-3
    lora_r: int = 0  # 0: train the whole LLM instead of LoRA adapters
    lora_alpha: int = 0
    max_steps: int | None = None  # cap each stage at this many steps (smoke tests)
    eval_batch_size: int = 16
    eval_max_new_tokens: int = 32
    # The synthetic training QA carries no answer-format instructions, so the bench is asked without them.
    format_hint: bool = False
    gradient_checkpointing: bool = False  # a 2-layer LLM's activations are small; recomputing them costs time
    # also train and score stage 2 with CLIP tokens only and with MoGe tokens only (triples stage 2)
    branches: bool = False
    # ask only these relations' predicates and choices (generate_synthetic's `relations`); None: every category.
    # Measured (README): left/right alone is learned in this budget (90.7 % on held-out questions); left/right
    # with taller/shorter at 1000 steps is not (53.2 %, left/right at chance)
    relations: tuple[str, ...] | None = ("left",)


QUICKSTART = QuickstartRecipe()
# The whole question mix with the schedule it was measured with (README: 12.5 min, near the constant answer)
FULL_QUICKSTART = replace(QUICKSTART, relations=None, stage2_epochs=3.0, stage2_global_batch=8, stage2_lr=3e-3,
                          stage2_adapter_lr=1e-3)  # fmt: skip
BRANCH_RUNS = (("clip", "CLIP only"), ("moge", "MoGe only"))  # (visual_branches, label)


def question_set(recipe: QuickstartRecipe) -> str:
    """What the run asks, in words: "questions on left/right, taller/shorter" or "every category (--full)"."""
    return relations_in_words(recipe.relations)


RELATION_WORDS = {"left": "left/right", "above": "above/below", "behind": "behind/in front",
                   "tall": "taller/shorter", "wide": "wider/thinner", "big": "bigger/smaller"}  # fmt: skip


def relations_in_words(relations: tuple[str, ...] | None) -> str:
    """`question_set` of a recipe's `relations` (None: every category)."""
    if relations is None:
        return "every category (--full)"
    return "questions on " + ", ".join(RELATION_WORDS.get(r, r) for r in relations)


def check_options(n: int, seed: int, recipe: QuickstartRecipe) -> None:
    """Refuse a bad option in one line before any step runs (each would otherwise fail only at its step)."""
    if n < 1:
        raise SgeoError(f"--n must be a positive number of images, got {n}")
    if seed < 0:  # the synthetic generator's rule
        raise SgeoError(f"--seed must be a non-negative integer, got {seed}")
    if recipe.n_eval is not None and recipe.n_eval < 1:  # an empty bench would fail after all the training
        raise SgeoError(f"--n-eval must be a positive number of held-out images, got {recipe.n_eval}")
    if recipe.max_steps is not None and recipe.max_steps < 1:
        raise SgeoError(f"--max-steps must be a positive number of steps, got {recipe.max_steps}")
