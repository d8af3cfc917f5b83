"""The frozen vision towers: one small class per kind (`registry.KINDS`), and `VisionTowers`, a model's list.

Each tower maps the shared pixels [B, 3, S, S] to what its feature store holds: [B, T, D] for one layer,
[B, L, T, D] for several. Each loads through its own library's loader (transformers, open_clip, moge) from a
local path, and computes only the blocks it returns.
"""
