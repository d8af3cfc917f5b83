"""Which geometry tower? The same stage 2 with CLIP+MoGe, CLIP+DINOv2 and CLIP+Depth Anything, side by side.

    python bench/tower_ablation.py                        # 2000 + 250 synthetic images, the quickstart's recipe
    python bench/tower_ablation.py --n 400 --steps 150    # a smaller budget
    python bench/tower_ablation.py --work runs/ablation   # keep everything (a rerun skips what is done)

In one work directory (a temp dir unless --work) it writes the synthetic data, a DINOv2 (`facebook/dinov2-small`'s
layout) and a Depth Anything V2 (`Depth-Anything-V2-Small-hf`'s) with random weights and the demo preset's
sin-cos position tables (sgeo.model.random_init.geometry_towers), and composes three models with `sgeo compose`'s function from
the demo preset's own parts: its LLM directory (`llm/`: a plain Llama with its tokenizer, which compose takes as
any causal LM; LLaVA's `vicuna_v1` template, the preset's own), its CLIP, and one geometry tower each (the
preset's MoGe, or the new DINOv2 / Depth Anything). Same LLM, same CLIP, same adapter seed: only the second
tower differs.

Each model is extracted into ONE stores directory (a store per tower): the first run encodes CLIP and MoGe,
the second and third find the CLIP store complete and encode only their new tower. Then each trains as the
quickstart does (its default `QuickstartRecipe`: its question set, the relations that budget teaches; stage 1
on the captions, stage 2 on the spatial QA, whole LLM) and is scored on the held-out images with `sgeo eval --bench synthetic`'s function, beside the best
constant answer. Prints the images each extract encoded per tower and every score; writes `ablation.json`.

Read the scores for what they are: the geometry towers here are random-init ViT-S/14s (MoGe's backbone is one
too), so the table compares three random encoders of one architecture, not MoGe with DINOv2 with Depth
Anything; the bench shows that an ablation costs one extraction per tower, and gives the road for real weights
(`sgeo compose --tower dinov2=facebook/dinov2-large ...`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

# (label, the second tower's kind): the first tower is always the preset's CLIP
ARMS = (("CLIP+MoGe", "moge"), ("CLIP+DINOv2", "dinov2"), ("CLIP+Depth Anything", "depth_anything"))


def run_ablation(
    work: Path,
    n: int = 2000,
    n_eval: int = 250,
    steps: int | None = None,
    seed: int = 0,
    preset: str = "demo",
    num_cpus: int | None = None,
) -> dict:
    """Run (or continue) the ablation in `work`; returns {"runs": [...], "baseline", "seconds", ...}.

    `steps` caps stage 2 at that many optimizer steps (None: the recipe's epochs); stage 1 is the recipe's."""
    from sgeo.errors import SgeoError
    from sgeo.jobs.quickstart.recipe import QUICKSTART, check_options
    from sgeo.jobs.quickstart.steps import (
        Steps,
        data_complete,
        evaluate,
        is_scored,
        is_trained,
        read_scores,
        train_stage,
    )

    # every option before the heavy imports and any work
    recipe = replace(QUICKSTART, model=preset, n=n, n_eval=n_eval, branches=False)
    check_options(n, seed, recipe)
    if steps is not None and steps < 1:
        raise SgeoError(f"--steps must be a positive number of stage-2 steps, got {steps}")

    from sgeo.benchmarks import load_benchmark
    from sgeo.jobs.extract import ExtractConfig, run_extract
    from sgeo.model import resolve_model
    from sgeo.model.compose import compose
    from sgeo.model.random_init.geometry_towers import write_demo_geometry_towers
    from sgeo.pipeline.names import (
        SYNTHETIC_BENCH,
        SYNTHETIC_CAPTIONS,
        SYNTHETIC_EVAL,
        SYNTHETIC_QA,
        SYNTHETIC_TRAIN_BENCH,
    )
    from sgeo.scoring import constant_baseline
    from sgeo.synthetic import generate_synthetic

    work = Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data, stores = work / "data", work / "stores"
    bench = data / SYNTHETIC_EVAL / SYNTHETIC_BENCH
    parts = resolve_model(preset).directory.parent  # the preset's root: llm/, clip/, moge/
    progress = Steps(total=2 + 5 * len(ARMS))
    start = time.perf_counter()
    print(f"tower ablation: {preset} preset's LLM and CLIP, {n} training and {n_eval} held-out synthetic images, "
          f"stage 2 {'the recipe' + chr(39) + 's epochs' if steps is None else f'{steps} steps'}, seed {seed}, "
          f"in {work}", flush=True)  # fmt: skip

    # the quickstart's question set (the relations its budget teaches), so the scores can show learning
    with progress("synthetic data", data, done=data_complete(data, n, n_eval, recipe.relations)) as todo:
        if todo:
            generate_synthetic(data, n, seed, n_eval=n_eval, overwrite=True, relations=recipe.relations)
    with progress("geometry towers (DINOv2, Depth Anything V2; random init)", work / "towers", done=False):
        towers = {"moge": parts / "moge", **write_demo_geometry_towers(work / "towers")}

    runs = []
    for label, kind in ARMS:
        slug = kind.replace("_", "-")
        model, stage1, stage2, scores_dir = (
            work / f"{slug}-{what}" for what in ("model", "stage1", "stage2", "eval")
        )
        with progress(f"{label}: compose", model, done=(model / "config.json").is_file()) as todo:
            if todo:
                compose(str(parts / "llm"), [f"clip={parts / 'clip'}", f"{kind}={towers[kind]}"], model,
                        template="vicuna_v1", seed=seed)  # fmt: skip
        with progress(f"{label}: extract (one store per tower)", stores, done=False):
            summary = run_extract(ExtractConfig(root=data, store=str(stores), dataset="synthetic", model=str(model),
                                                batch_size=16, shard_size=64, num_cpus=num_cpus,
                                                progress=False))  # fmt: skip
        encoded = {name: (summary.ok if what == "encoded" else 0) for name, what in summary.towers.items()}
        print("      images encoded: " + ", ".join(f"{t} {k}" for t, k in encoded.items()), flush=True)
        with progress(f"{label}: stage 1 (adapters, captions)", stage1, done=is_trained(stage1)) as todo:
            if todo:
                train_stage(
                    recipe, 1, data / SYNTHETIC_CAPTIONS, str(model), {"store": stores}, n, seed, out=stage1
                )
        with progress(
            f"{label}: stage 2 (adapters + LLM, spatial QA)", stage2, done=is_trained(stage2)
        ) as todo:
            if todo:
                train_stage(replace(recipe, max_steps=steps), 2, data / SYNTHETIC_QA, str(stage1),
                            {"store": stores}, n, seed, out=stage2)  # fmt: skip
        with progress(f"{label}: eval on the held-out images", scores_dir,
                      done=is_scored(scores_dir)) as todo:  # fmt: skip
            scores = evaluate(recipe, bench, scores_dir, str(stage2)) if todo else read_scores(scores_dir)
        runs.append({"label": label, "towers": ["clip", kind], "encoded": encoded, "towers_status": summary.towers,
                     "model": str(stage2), "scores": scores})  # fmt: skip

    baseline = constant_baseline(load_benchmark("synthetic", data / SYNTHETIC_TRAIN_BENCH),
                                 load_benchmark("synthetic", bench))  # fmt: skip
    result = {"n": n, "n_eval": n_eval, "steps": steps, "seed": seed, "preset": preset, "work": str(work),
              "runs": runs, "baseline": baseline, "seconds": {**progress.timings,
                                                              "total": time.perf_counter() - start}}  # fmt: skip
    (work / "ablation.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def report(result: dict) -> str:
    """The encoded images per run, then every score side by side (overall, per type, per category)."""
    from sgeo.scoring import comparison_table

    lines = ["images encoded by each model's extract (one store per tower, in one stores directory):"]
    width = max(len(r["label"]) for r in result["runs"])
    for run in result["runs"]:
        parts = [f"{t} {k}" + (" (kept)" if run["towers_status"][t] == "kept" else "")
                 for t, k in run["encoded"].items()]  # fmt: skip
        lines.append(f"  {run['label'].ljust(width)}  {', '.join(parts)}")
    columns = {run["label"]: run["scores"] for run in result["runs"]}
    baseline = result["baseline"]
    lines += ["", f"% of held-out questions (n: how many), after stage 2 "
              f"({'the recipe' if result['steps'] is None else str(result['steps']) + ' steps'}); constant: the "
              "best single answer per category, chosen on the training images' questions:",
              comparison_table({**columns, "constant": baseline}, answers=baseline["answers"])]  # fmt: skip
    lines.append(f"\n{result['seconds']['total'] / 60:.1f} min in all; work directory {result['work']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--n", type=int, default=2000, help="training images (default 2000, the quickstart's)"
    )
    parser.add_argument(
        "--n-eval", type=int, default=250, help="held-out images, 4 questions each (default 250)"
    )
    parser.add_argument("--steps", type=int, default=None,
                        help="stage-2 optimizer steps (default: the quickstart's 3 epochs)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="data, adapters and training seed")
    parser.add_argument("--preset", default="demo", choices=("demo", "tiny"),
                        help="whose LLM and CLIP (default demo: position-aware towers, 128-wide LLM)")  # fmt: skip
    parser.add_argument("--num-cpus", type=int, default=None, help="extract's Ray CPUs (default: all)")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep everything here; a rerun continues (default: a temp dir, removed)")  # fmt: skip
    args = parser.parse_args(argv)

    from sgeo.errors import SgeoError

    options = {"n": args.n, "n_eval": args.n_eval, "steps": args.steps, "seed": args.seed,
               "preset": args.preset, "num_cpus": args.num_cpus}  # fmt: skip
    try:
        if args.work is not None:
            result = run_ablation(args.work, **options)
        else:
            with tempfile.TemporaryDirectory(prefix="sgeo-tower-ablation-") as tmp:
                result = run_ablation(Path(tmp), **options)
                result["work"] += " (a temp dir, now removed; --work DIR keeps it)"
    except SgeoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
