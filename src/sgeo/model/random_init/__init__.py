"""Random-init presets (`tiny`, `demo`, `ref-dims`): seeded random-init parts in their real on-disk formats.

- `clip/`: a transformers `CLIPVisionModel` directory (fp32, as openai/clip-vit-large-patch14-336 ships);
- `moge/model.pt`: a MoGe v1 checkpoint (`{"model_config", "model"}`, fp32) with a DINOv2 backbone;
- `llm/`: a Llama with its tokenizer: a byte-level BPE trained deterministically at creation (`tiny`), or a
  SentencePiece `tokenizer.model` saved as LLaVA-1.5 ships it (`ref-dims`, see `model/spm.py`);
- `spatialgeo/`: the assembled starting model (adapters + LLM) with its processor, naming the towers by
  relative path so two homes hold byte-identical files.
Every part then loads through its real loader. Same seed, same sizes, same bytes.

The modules, one job each:
- `sizes`: `RandomInitSizes` and the presets' sizes (`TINY`, `DEMO`, `VIT_B`, `ref_dims`);
- `bpe_tokenizer`: the tiny presets' BPE tokenizer and the frozen corpus it is trained on;
- `configs`: the parts' configs for given sizes (and `random_init_config`: a preset's config, nothing written);
- `positions`: the fixed 2D sin-cos position tables of the demo towers;
- `writer`: `write_random_init`, which writes every part;
- `geometry_towers`: random-init DINOv2 and Depth Anything V2 towers in their public layouts (the ablation's).
"""
