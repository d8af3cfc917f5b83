"""Run the quickstart with its recipe changed: how the default's question set and schedule were chosen. Prints
the quickstart's own table; asserts nothing.

    python bench/quickstart_recipe.py runs/l relations=left                       # the default: 90.7 % (README)
    python bench/quickstart_recipe.py runs/lt relations=left,tall stage2_epochs=8  # 53.2 % with 4 turns per image*
    python bench/quickstart_recipe.py runs/full --full stage2_epochs=6              # the whole mix, twice the steps

(* measured with `NARROW_TURNS_PER_IMAGE` = 4 in sgeo.synthetic.writer; it is 2 now.)

Each KEY=VALUE sets one field of `QuickstartRecipe` (relations: comma-separated, or `all`); a field not named
keeps the default's value (with --full: `sgeo quickstart --full`'s). The workdir must be new, or one this same recipe wrote (the quickstart refuses
another's data).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def parse_recipe(pairs: list[str], full: bool = False):
    from sgeo.errors import SgeoError
    from sgeo.jobs.quickstart import FULL_QUICKSTART, QUICKSTART

    base = FULL_QUICKSTART if full else QUICKSTART
    fields = {f.name: f for f in dataclasses.fields(base)}
    changes = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in fields or not value:
            raise SgeoError(f"{pair!r}: give KEY=VALUE with KEY one of {', '.join(fields)}")
        if key == "relations":
            changes[key] = None if value == "all" else tuple(value.split(","))
        else:
            default = getattr(base, key)
            kind = int if default is None else type(default)  # the fields that default to None count
            changes[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return dataclasses.replace(base, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("changes", nargs="*", metavar="KEY=VALUE", help="recipe fields to change")
    parser.add_argument("--full", action="store_true", help="start from the --full recipe (every category)")
    args = parser.parse_args()
    from sgeo.jobs.quickstart import run_quickstart

    run_quickstart(workdir=args.workdir, recipe=parse_recipe(args.changes, args.full))


if __name__ == "__main__":
    main()
