"""Tiny stand-ins for the public checkpoints of the siglip, dinov2, depth_anything and MoGe-2 towers, each written
in its published layout: the same file names, `config.json` fields and class names, weights saved with
`save_pretrained` of the real transformers class (random init, seeded), processor configs as published.

- `google/siglip-so400m-patch14-384`: a full `SiglipModel` (`config.json` with `text_config` and `vision_config`,
  `model.safetensors`), `preprocessor_config.json` of `SiglipImageProcessor` (mean = std = 0.5, bicubic);
- `google/siglip2-so400m-patch16-naflex`: a full `Siglip2Model` (`model_type: siglip2`, `num_patches`), its
  `Siglip2ImageProcessorFast` config (`max_num_patches`);
- `facebook/dinov2-large`: `Dinov2Model` (`config.json`, `model.safetensors`), `BitImageProcessor` config
  (ImageNet statistics, shortest edge 256, crop 224);
- `depth-anything/Depth-Anything-V2-Large-hf`: `DepthAnythingForDepthEstimation` with a DINOv2 `backbone_config`
  (`out_indices` [5, 12, 18, 24] for 24 blocks, `reshape_hidden_states: false`), `DPTImageProcessor` config
  (518, `keep_aspect_ratio`, `ensure_multiple_of: 14`);
- `Ruicheng/moge-2-vitl`: `model.pt` = `{"model_config", "model"}` of `moge.model.v2.MoGeModel` (the structure
  of the MoGe repo's configs/train/v2.json, without the normal head), backbone `dinov2_vits14`.

The published config.json files are written back after `save_pretrained`, field for field (tiny values), so the
towers read exactly what the hub serves, not what this transformers version would write.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# the DINOv2 and Depth Anything writers (the ablation's towers share them)
from sgeo.model.random_init import geometry_towers

SIGLIP_SIZE = 56  # 4 x 4 patches of 14
DINO_PATCH = geometry_towers.DINOV2_PATCH


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def siglip_config(image_size: int = SIGLIP_SIZE) -> dict:
    """google/siglip-so400m-patch14-384's config.json, field for field, at tiny sizes."""
    return {
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "model_type": "siglip",
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "model_type": "siglip_text_model",
                        "num_attention_heads": 2, "num_hidden_layers": 1},
        "torch_dtype": "float32",
        "transformers_version": "4.37.0.dev0",
        "vision_config": {"hidden_size": 32, "image_size": image_size, "intermediate_size": 64,
                          "model_type": "siglip_vision_model", "num_attention_heads": 2, "num_hidden_layers": 3,
                          "patch_size": 14},
    }  # fmt: skip


def write_siglip(directory: Path, seed: int = 21) -> Path:
    from transformers import SiglipConfig, SiglipModel

    published = siglip_config()
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(**{k: v for k, v in published.items() if k != "architectures"}))
    model.save_pretrained(directory)  # model.safetensors, as the hub repo holds it
    _write_json(directory / "config.json", published)
    size = published["vision_config"]["image_size"]
    _write_json(directory / "preprocessor_config.json", {
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"height": size, "width": size},
    })  # fmt: skip
    return directory


def write_siglip2_naflex(directory: Path, seed: int = 22) -> Path:
    """A NaFlex SigLIP2 (`Siglip2Model`): 16 position embeddings (a 4 x 4 grid) of patch 16."""
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(seed)
    config = Siglip2Config(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1,
                     "vocab_size": 256000},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 3,
                       "patch_size": 16, "num_patches": 16},
    )  # fmt: skip
    Siglip2Model(config).save_pretrained(directory)  # its config.json as transformers writes a Siglip2Model's
    _write_json(directory / "preprocessor_config.json", {
        "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Siglip2ImageProcessorFast",
        "image_std": [0.5, 0.5, 0.5], "max_num_patches": 16, "patch_size": 16, "processor_class": "Siglip2Processor",
        "resample": 2, "rescale_factor": 0.00392156862745098,
    })  # fmt: skip
    return directory


def dinov2_config(layers: int = 6, image_size: int = 70) -> dict:
    """facebook/dinov2-large's config.json, field for field, at tiny sizes (its image_size is 518: the position
    grid, interpolated to whatever size is read)."""
    return {
        "architectures": ["Dinov2Model"], "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": 32, "image_size": image_size,
        "initializer_range": 0.02, "layer_norm_eps": 1e-06, "layerscale_value": 1.0, "mlp_ratio": 4,
        "model_type": "dinov2", "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": layers,
        "patch_size": DINO_PATCH, "qkv_bias": True, "torch_dtype": "float32", "transformers_version": "4.31.0.dev0",
        "use_swiglu_ffn": False,
    }  # fmt: skip


def write_dinov2(directory: Path, seed: int = 23) -> Path:
    processor = {**geometry_towers.DINOV2_PROCESSOR, "crop_size": {"height": 56, "width": 56},
                 "size": {"shortest_edge": 64}}  # fmt: skip
    return geometry_towers.write_dinov2(directory, dinov2_config(), processor, seed)


DEPTH_ANYTHING_OUT_INDICES = [2, 3, 5, 6]  # Large's [5, 12, 18, 24] of 24 blocks, for 6


def depth_anything_config() -> dict:
    """depth-anything/Depth-Anything-V2-Large-hf's config.json, field for field, at tiny sizes."""
    layers = 6
    return {
        "architectures": ["DepthAnythingForDepthEstimation"],
        "backbone": None,
        "backbone_config": {
            "architectures": ["Dinov2Model"], "hidden_size": 32, "image_size": 70, "model_type": "dinov2",
            "num_attention_heads": 2, "num_hidden_layers": layers,
            "out_features": [f"stage{i}" for i in DEPTH_ANYTHING_OUT_INDICES],
            "out_indices": list(DEPTH_ANYTHING_OUT_INDICES), "patch_size": DINO_PATCH,
            "reshape_hidden_states": False, "stage_names": ["stem"] + [f"stage{i}" for i in range(1, layers + 1)],
            "torch_dtype": "float32",
        },
        "fusion_hidden_size": 16, "head_hidden_size": 8, "head_in_index": -1, "initializer_range": 0.02,
        "model_type": "depth_anything", "neck_hidden_sizes": [8, 16, 32, 32], "patch_size": DINO_PATCH,
        "reassemble_factors": [4, 2, 1, 0.5], "reassemble_hidden_size": 32, "torch_dtype": "float32",
        "transformers_version": None, "use_pretrained_backbone": False,
    }  # fmt: skip


def write_depth_anything(directory: Path, seed: int = 24) -> Path:
    processor = geometry_towers.depth_anything_processor(70)
    return geometry_towers.write_depth_anything(directory, depth_anything_config(), processor, seed)


MOGE2_BLOCKS = [2, 5, 8, 11]  # moge-2-vitl reads blocks [5, 11, 17, 23] of 24 (0-based); dinov2_vits14 has 12


def moge2_config() -> dict:
    """The model_config of Ruicheng/moge-2-vitl (the MoGe repo's configs/train/v2.json `model`, without the normal
    head), tiny except for the DINOv2 backbone, which moge builds by name."""
    width, blocks = 32, [32, 16, 8, 8, 8]
    head = {"dim_in": blocks, "dim_res_blocks": blocks, "num_res_blocks": [0, 1, 1, 1, 0],
            "res_block_in_norm": "none", "res_block_hidden_norm": "none",
            "resamplers": ["conv_transpose", "conv_transpose", "conv_transpose", "bilinear"]}  # fmt: skip
    return {
        "encoder": {"backbone": "dinov2_vits14", "intermediate_layers": list(MOGE2_BLOCKS), "dim_out": width},
        "neck": {
            **head,
            "dim_in": [width + 2, 2, 2, 2, 2],
            "dim_out": None,
            "num_res_blocks": [0, 2, 2, 2, 0],
        },
        "points_head": {**head, "dim_out": [None, None, None, None, 3]},
        "mask_head": {**head, "dim_out": [None, None, None, None, 1]},
        "scale_head": {"dims": [width, width, width, 1]},
        "remap_output": "exp",
        "num_tokens_range": [1200, 3600],
    }


def write_moge2(directory: Path, seed: int = 25) -> Path:
    from moge.model.v2 import MoGeModel

    config = moge2_config()
    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": config, "model": MoGeModel(**config).state_dict()}, directory / "model.pt")
    return directory / "model.pt"
