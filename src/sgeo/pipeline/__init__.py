"""Everything between files on disk and the model, and from answers back to scores.

Training data: dataset layouts (datasets), image decoding (images), LLaVA-format samples (samples,
training_data), the feature codec and stores a run reads (features, feature_set), user JSON files
(json_files). Evaluation: the benchmarks as published (benchmarks/), the answers file (answers), scoring
by the authors' rules or a judge (scoring/). The synthetic dataset (synthetic/) and the built-in names
that `sgeo --help` lists without importing their loaders (names).
"""
