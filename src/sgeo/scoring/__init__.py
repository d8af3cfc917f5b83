"""Rule-based scoring of spatial VQA answers, and the per-type / per-category summary of a run.

The reference (SpatialRGPT's scripts/srgpt/eval/evaluate_spatial_with_gpt4.py, also used for SpatialGeo)
asks GPT-4 to read numbers and to judge qualitative answers. Here rules make the same decisions, so scores
are free, offline and reproducible; `judge` asks an OpenAI-compatible endpoint with SpatialRGPT's own
prompts instead (`judge_prompts`). SpatialScore answers are scored by SpatialScore's own rules
(`spatialscore`).

- quantitative (`quantities`): both texts read as metres; success iff 0.75 * gt <= pred <= 1.25 * gt (the
  reference's rule); rel_error = |pred - gt| / gt.
- direction (`direction`, "N o'clock"): success iff the hours differ by at most 1 on the 12-hour circle
  (the reference's).
- qualitative (`qualitative`): predicates ("Is A left of B?") compare the truth value each text asserts;
  choices ("Which is more to the left, A or B?") compare the object each text picks.
- multiple choice (`choice`): the option letter (or option text) of the prediction against the gt letter.

`dispatch.score_item` picks sgeo's scorer for one record (each benchmark's record names its rules, and
`sgeo.benchmarks.SCORERS` maps benchmarks to them: the benchmarks import this package, never the
other way); `report` summarises a run, `compare` sets runs side by side; `baseline` is the best constant
answer, fitted on a training split.
"""

from .baseline import constant_baseline
from .choice import CHOICE_LETTERS, MULTIPLE_CHOICE_TYPES, parse_choice, score_multiple_choice
from .compare import comparison_table
from .direction import parse_clock, score_direction
from .dispatch import kind_of, score_item
from .judge import ChatJudge, JudgeError, judge_record
from .qualitative import candidates_in, is_choice, pick, relation_of, score_qualitative, yes_no
from .quantities import UNITS, parse_quantity, score_quantitative
from .report import aggregate, format_table, plot_scores, report_group
from .spatialscore import (
    extract_number,
    extract_option,
    extract_yes_no,
    mean_relative_accuracy,
    numeric_with_unit,
    score_spatialscore,
)

__all__ = [
    "CHOICE_LETTERS",
    "MULTIPLE_CHOICE_TYPES",
    "UNITS",
    "ChatJudge",
    "JudgeError",
    "aggregate",
    "candidates_in",
    "comparison_table",
    "constant_baseline",
    "extract_number",
    "extract_option",
    "extract_yes_no",
    "format_table",
    "is_choice",
    "judge_record",
    "kind_of",
    "mean_relative_accuracy",
    "numeric_with_unit",
    "parse_choice",
    "parse_clock",
    "parse_quantity",
    "pick",
    "plot_scores",
    "relation_of",
    "report_group",
    "score_direction",
    "score_item",
    "score_multiple_choice",
    "score_qualitative",
    "score_quantitative",
    "score_spatialscore",
    "yes_no",
]
