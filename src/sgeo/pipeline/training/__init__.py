"""Training data: LLaVA-format JSON samples joined to feature-store rows, in a seeded batch order.

- join.py: `load_samples` reads the JSON; `join_samples` keeps the samples whose image is committed "ok" in the
  store (by image id, through the manifest) and counts the rest; text-only samples are kept.
- checks.py: what the trainer refuses or warns about before the first step (an image past the length cut,
  samples with every label ignored).
- dataset.py: `TrainingDataset` tokenizes one sample and names its store row (cached) or decodes its pixels
  (online).
- collate.py: `Collator` pads a micro-batch and stacks the features of the samples that have an image, in
  batch order (the order of their image tokens); it reads all rows of a batch with one store call.
  `drop_clip` is the clip-drop ablation on those features.
- batches.py: `BatchPlan` fixes the order of every epoch from the seed (optionally LLaVA's modality- and
  length-grouped order), so a resumed run sees exactly the batches an uninterrupted one would.
- prefetch.py: `Prefetcher` receives the DataLoader workers' batches on a thread, so the step never pays for it.

Nothing here runs an encoder: online batches carry pixels, which the trainer encodes.
"""
