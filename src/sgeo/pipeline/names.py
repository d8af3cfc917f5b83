"""The names of the built-in dataset layouts and benchmarks, in a module that imports nothing.

`sgeo --help` lists them without importing their loaders (PIL, numpy). The dataset registry is
`datasets.register_dataset` (tests/test_cli.py checks that `DATASETS` names exactly what it registers).

Benchmarks are registered here, once: `BENCHMARK_MODULES` maps each command-line name to the module of
`sgeo.pipeline.benchmarks` that defines its `BENCHMARK` record (loader, protocols, scorer, image rule, judge).
`benchmarks.registry.REGISTRY` is built from this mapping when the package is imported, so the CLI's names,
the loaders and the scorers cannot disagree; a module without a complete record stops that import.
"""

DATASETS = ("coco", "llava-pretrain", "llava-mix665k", "folder", "synthetic")
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
