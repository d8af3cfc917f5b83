"""Random-init DINOv2 and Depth Anything V2 towers in their public layouts, for the tower ablation and the tests.

Each writer saves the real transformers class with `save_pretrained` (random init, seeded: same seed, same
bytes), then writes back the published `config.json` field for field (so a tower reads what the hub serves,
not what this transformers version would write) and the published `preprocessor_config.json`:

- `facebook/dinov2-*`: `Dinov2Model` (`config.json`, `model.safetensors`), `BitImageProcessor` config;
- `depth-anything/Depth-Anything-V2-*-hf`: `DepthAnythingForDepthEstimation` with a DINOv2 `backbone_config`
  (`out_indices`: the blocks its depth head reads), `DPTImageProcessor` config.

`DINOV2_SMALL` and `DEPTH_ANYTHING_V2_SMALL` are the published configs of `facebook/dinov2-small` and
`depth-anything/Depth-Anything-V2-Small-hf`: a ViT-S/14 backbone, the very architecture of the demo preset's
MoGe backbone (`dinov2_vits14`), so the geometry towers of the ablation differ in what they are, not in size.
`write_demo_geometry_towers` writes both as the demo preset writes its towers (`positions.py`): with
`position_embedding_scale` x a 2D sin-cos grid in the position table (CLS: zeros), so every patch token says
where it is; without it a random-init tower's tokens do not, and a tiny model cannot learn spatial questions
(bench/grounding_probe.py).
The table keeps its published 37 x 37 grid (image_size 518), interpolated to the input's grid by the model,
as the demo's MoGe interpolates its DINOv2's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..pixel_stats import IMAGENET_MEAN, IMAGENET_STD
from ..towers.moge_checkpoint import DINOV2_PATCH
from .positions import write_dinov2_positions

IMAGENET = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD)}
RESCALE = 0.00392156862745098  # 1 / 255, as the processors' configs write it

# facebook/dinov2-small's config.json (dinov2-base / -large / -giant differ in hidden_size, num_attention_heads,
# num_hidden_layers, and -giant in use_swiglu_ffn)
DINOV2_SMALL = {
    "architectures": ["Dinov2Model"], "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0,
    "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": 384, "image_size": 518,
    "initializer_range": 0.02, "layer_norm_eps": 1e-06, "layerscale_value": 1.0, "mlp_ratio": 4,
    "model_type": "dinov2", "num_attention_heads": 6, "num_channels": 3, "num_hidden_layers": 12,
    "patch_size": DINOV2_PATCH, "qkv_bias": True, "torch_dtype": "float32", "transformers_version": "4.31.0.dev0",
    "use_swiglu_ffn": False,
}  # fmt: skip
# facebook/dinov2-*'s preprocessor_config.json (every size ships the same one)
DINOV2_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
    "do_normalize": True, "do_rescale": True, "do_resize": True, **IMAGENET,
    "image_processor_type": "BitImageProcessor", "resample": 3, "rescale_factor": RESCALE,
    "size": {"shortest_edge": 256},
}  # fmt: skip

# depth-anything/Depth-Anything-V2-Small-hf's config.json: its backbone_config lists only what differs from
# Dinov2Config's defaults (12 blocks of patch 14); the depth head reads blocks 3, 6, 9 and 12
DEPTH_ANYTHING_V2_SMALL = {
    "architectures": ["DepthAnythingForDepthEstimation"],
    "backbone": None,
    "backbone_config": {
        "architectures": ["Dinov2Model"], "hidden_size": 384, "image_size": 518, "model_type": "dinov2",
        "num_attention_heads": 6, "out_features": ["stage3", "stage6", "stage9", "stage12"],
        "out_indices": [3, 6, 9, 12], "reshape_hidden_states": False, "torch_dtype": "float32",
    },
    "fusion_hidden_size": 64, "head_hidden_size": 32, "head_in_index": -1, "initializer_range": 0.02,
    "model_type": "depth_anything", "neck_hidden_sizes": [48, 96, 192, 384], "patch_size": DINOV2_PATCH,
    "reassemble_factors": [4, 2, 1, 0.5], "reassemble_hidden_size": 384, "torch_dtype": "float32",
    "transformers_version": None, "use_pretrained_backbone": False,
}  # fmt: skip


def depth_anything_processor(size: int = 518) -> dict:
    """depth-anything/Depth-Anything-V2-*-hf's preprocessor_config.json (518 in every published size)."""
    return {
        "do_normalize": True, "do_pad": False, "do_rescale": True, "do_resize": True, "ensure_multiple_of": 14,
        **IMAGENET, "image_processor_type": "DPTImageProcessor", "keep_aspect_ratio": True, "resample": 3,
        "rescale_factor": RESCALE, "size": {"height": size, "width": size}, "size_divisor": None,
    }  # fmt: skip


# The demo geometry towers' seeds (fixed, as the presets' are: the same files in every home and every run).
DEMO_DINOV2_SEED, DEMO_DEPTH_ANYTHING_SEED = 100, 101


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_dinov2(
    directory: Path,
    published: dict = DINOV2_SMALL,
    processor: dict = DINOV2_PROCESSOR,
    seed: int = DEMO_DINOV2_SEED,
    position_embedding_scale: float = 0.0,
) -> Path:
    """A `facebook/dinov2-*` directory of the `published` config (random init, seeded)."""
    from transformers import Dinov2Config, Dinov2Model

    directory = Path(directory)
    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(**published))
    if position_embedding_scale:
        write_dinov2_positions(model, position_embedding_scale)
    model.save_pretrained(directory)  # model.safetensors, as the hub repo holds it
    _write_json(directory / "config.json", published)
    _write_json(directory / "preprocessor_config.json", processor)
    return directory


def write_depth_anything(
    directory: Path,
    published: dict = DEPTH_ANYTHING_V2_SMALL,
    processor: dict | None = None,
    seed: int = DEMO_DEPTH_ANYTHING_SEED,
    position_embedding_scale: float = 0.0,
) -> Path:
    """A `depth-anything/Depth-Anything-V2-*-hf` directory of the `published` config (random init, seeded)."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation

    directory = Path(directory)
    torch.manual_seed(seed)
    fields = {k: v for k, v in published.items() if k not in ("architectures", "transformers_version")}
    model = DepthAnythingForDepthEstimation(DepthAnythingConfig(**fields))
    if position_embedding_scale:
        write_dinov2_positions(model, position_embedding_scale)
    model.save_pretrained(directory)
    _write_json(directory / "config.json", published)
    _write_json(directory / "preprocessor_config.json", processor or depth_anything_processor())
    return directory


def write_demo_geometry_towers(root: Path, position_embedding_scale: float | None = None) -> dict[str, Path]:
    """`root/dinov2` (facebook/dinov2-small's layout) and `root/depth-anything` (Depth-Anything-V2-Small-hf's),
    with the demo preset's position embeddings; {kind: directory}. Written once: a directory holding its
    preprocessor_config.json (written last) is kept (the writers are deterministic: it holds the same bytes)."""
    from ..load_context import quiet_loading
    from .sizes import DEMO

    scale = DEMO.position_embedding_scale if position_embedding_scale is None else position_embedding_scale
    root = Path(root)
    out = {"dinov2": root / "dinov2", "depth_anything": root / "depth-anything"}
    writers = {"dinov2": write_dinov2, "depth_anything": write_depth_anything}
    with quiet_loading():
        for kind, directory in out.items():
            if not (directory / "preprocessor_config.json").is_file():
                writers[kind](directory, position_embedding_scale=scale)
    return out
