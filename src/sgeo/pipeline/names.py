"""The names of the built-in dataset layouts and benchmarks, in a module that imports nothing.

`sgeo --help` lists them without importing their loaders (PIL, numpy). The dataset registry is
`datasets.register_dataset` (tests/test_cli.py checks that `DATASETS` names exactly what it registers).

Benchmarks are registered here, once: `BENCHMARK_MODULES` maps each command-line name to the module of
`sgeo.benchmarks` that defines its `BENCHMARK` record (loader, protocols, scorer, image rule, judge).
`benchmarks.registry.REGISTRY` is built from this mapping when the package is imported, so the CLI's names,
the loaders and the scorers cannot disagree; a module without a complete record stops that import.
"""

DATASETS = ("coco", "llava-pretrain", "llava-mix665k", "folder", "synthetic")

# The files of the synthetic dataset (`sgeo data synthetic`), relative to its folder: written by
# `synthetic.writer`, read by the `synthetic` dataset layout and benchmark, the quickstart and bench/ scripts.
SYNTHETIC_CAPTIONS = "captions.json"  # stage 1: a caption per training image (LLaVA-Pretrain's format)
SYNTHETIC_QA = "spatial_qa.json"  # stage 2: spatial QA turns per training image (LLaVA's format)
SYNTHETIC_TRAIN_BENCH = "train_bench.json"  # bench questions on the training images (the constant baseline)
SYNTHETIC_EVAL = "eval"  # the held-out images (eval/images/) and their bench
SYNTHETIC_BENCH = "bench.json"  # in SYNTHETIC_EVAL: SpatialRGPT-Bench's format
SYNTHETIC_META = "meta.json"  # the generator's version, sizes and every scene's ground truth
BENCHMARK_MODULES = {
    "spatialrgpt": "spatialrgpt",
    "spatialscore": "spatialscore",
    "cv-bench": "cvbench",
    "blink": "blink",
    "3dsrbench": "threedsr",
    "embspatial": "embspatial",
    "pope": "pope",
    "mme": "mme",
    "mm-vet": "mmvet",
    "synthetic": "synthetic",
}
BENCHMARKS = tuple(BENCHMARK_MODULES)
# `sgeo eval --bench NAME` for several benchmarks at once: the spatial suites papers report, and the general
# checks the SpatialGeo reference runs (llava/eval) to show nothing else was lost
SUITES = {
    "spatial": ("spatialrgpt", "spatialscore", "cv-bench", "blink", "3dsrbench", "embspatial"),
    "general": ("pope", "mme", "mm-vet"),
}
