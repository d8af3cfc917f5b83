"""Published figures of reference models, each with the table it was copied from, for `sgeo score --compare
RUN... --published` (shown beside a run's figures, never mixed into its scores).

A figure is keyed like a row of `scoring.compare.compare_rows`: the benchmark's command-line name and the
figure's name as sgeo reports it ("mean item score", a headline figure of the benchmark's own summary, "group
left/right", "category X"), in its unit ("%": percent; "points": as published). Only numbers read in a
public source are listed; add one as one line, naming the source precisely (paper, table, row).

Not yet listed, for want of a source read here: SpatialRGPT-Bench (LLaVA-1.5-7B and SpatialGeo: the SpatialGeo
README shows its comparison as images only), CV-Bench (the Cambrian-1 paper's tables), BLINK per subtask (the
BLINK paper's tables).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedFigure:
    bench: str  # the benchmark's command-line name
    figure: str  # the row's figure name (see the module's docstring)
    model: str  # the reference model, as its authors name it
    value: float  # in `unit`
    source: str  # where it is published: paper, table
    unit: str = "%"

    @property
    def column(self) -> str:
        """The table's column for this model and source."""
        return f"{self.model} (published)"

    @property
    def source_key(self) -> str:
        return f"{self.model} | {self.source}"


_LLAVA_ZOO = (
    "LLaVA docs/MODEL_ZOO.md, LLaVA-v1.5 table, row LLaVA-1.5 7B full_ft-1e "
    "(github.com/haotian-liu/LLaVA, commit 30ca553)"
)
_BLINK_README = (
    "BLINK README, Mini-Leaderboard, Val (1,901) column: the mean over all 14 subtasks, not sgeo's spatial five "
    "(github.com/zeyofu/BLINK_Benchmark, commit 2d6a779)"
)

PUBLISHED: tuple[PublishedFigure, ...] = (
    # POPE's column, read as sgeo's "F1 (mean over ...)": LLaVA-1.5 reports the F1 averaged over the three splits
    PublishedFigure("pope", "F1 (mean over adversarial, popular, random)", "LLaVA-1.5-7B", 85.9, _LLAVA_ZOO),
    # MME's column is the perception total (the LLaVA-1.6 rows of the same file write perception/cognition)
    PublishedFigure(
        "mme", "Perception score (sum of 10 subtasks)", "LLaVA-1.5-7B", 1510.7, _LLAVA_ZOO, "points"
    ),
    PublishedFigure("mm-vet", "MM-Vet total (points of 100)", "LLaVA-1.5-7B", 31.1, _LLAVA_ZOO, "points"),
    PublishedFigure("blink", "BLINK val accuracy, all 14 subtasks", "LLaVA-1.5-7B", 37.1, _BLINK_README),
)


def published_for(benches) -> list[PublishedFigure]:
    """The published figures of the benchmarks `benches` names, in the table's order."""
    wanted = set(benches)
    return [figure for figure in PUBLISHED if figure.bench in wanted]
