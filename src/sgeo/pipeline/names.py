"""The names of the built-in dataset layouts and benchmarks, in a module that imports nothing.

`sgeo --help` lists them without importing their loaders (PIL, numpy). The registries are
`datasets.register_dataset` and `benchmarks.LOADERS`; tests/test_cli.py checks that these tuples name
exactly what they register, so a new built-in dataset or benchmark is added here too and the help lists it.
"""

DATASETS = ("coco", "llava-pretrain", "llava-mix665k", "folder", "synthetic")
BENCHMARKS = ("spatialrgpt", "spatialscore", "synthetic")
