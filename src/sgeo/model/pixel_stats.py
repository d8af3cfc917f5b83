"""Input statistics of the encoders' own preprocessing (a leaf module: the processor and the towers share it)."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # openai CLIP
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2, MoGe, Depth Anything
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)  # SigLIP / SigLIP2 (their preprocessor_config.json)
SIGLIP_STD = (0.5, 0.5, 0.5)
