"""The commands' jobs, orchestration only: each reads its options, calls the library (`sgeo.model`,
`sgeo.cache`, `sgeo.pipeline`, `sgeo.inference`, `sgeo.benchmarks`, `sgeo.scoring`, `sgeo.synthetic`,
`sgeo.clients`) in order and writes its outputs.

extract/ (`sgeo extract`, Ray), train/ (`sgeo train`, DeepSpeed), ask (`sgeo ask`), eval (`sgeo eval`:
remote for a model behind an API, suite for several benchmarks at once), score (`sgeo score`, `--compare`),
serve/ (`sgeo serve`), quickstart/ (`sgeo quickstart`: the others end to end), info (`sgeo info`,
`sgeo cache plan`).
"""
