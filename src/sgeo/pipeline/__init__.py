"""Files on disk -> what a run reads: dataset layouts (datasets), image decoding (images), LLaVA-format samples
(samples), the training data a run iterates (training/: join with the stores, checks, dataset, collator,
batch order, prefetch), the feature codec and the stores a run reads (features, feature_set, store_writer),
user JSON files (json_files), the answers file an eval writes (answers), and the built-in names `sgeo --help`
lists without importing their loaders (names).

The benchmarks (`sgeo.benchmarks`), their scoring (`sgeo.scoring`) and the synthetic dataset
(`sgeo.synthetic`) have packages of their own.
"""
