"""4/8-bit LLM weights (bitsandbytes), as LLaVA's `--load-4bit` / `--load-8bit`: `sgeo ask` and `sgeo serve`
load a model, then swap its LLM's linear layers here."""

from __future__ import annotations

from ..errors import SgeoError


def quantize_language_model(model, bits: int, device: str) -> None:
    """Swap the LLM's linear layers (not lm_head) for bitsandbytes ones of `bits` (4 or 8), then move the
    model to `device` (a CUDA one), where bitsandbytes quantizes the weights.

    Done after loading rather than through `from_pretrained`, so it applies to every way a model loads
    (sgeo directories and reference checkpoints alike); the settings come from one `BitsAndBytesConfig`.
    """
    import torch
    from torch import nn
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes as bnb
    except ImportError:
        raise SgeoError("--load-4bit/--load-8bit need bitsandbytes: pip install 'sgeo[gpu]'") from None
    settings = BitsAndBytesConfig(
        load_in_4bit=bits == 4, load_in_8bit=bits == 8, bnb_4bit_compute_dtype=torch.float16,
        bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4",
    )  # fmt: skip
    llm = model.language_model
    for parent in list(llm.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or name == "lm_head":
                continue
            weight = child.weight.data.to("cpu", torch.float16)
            if bits == 4:
                layer = bnb.nn.Linear4bit(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    compute_dtype=settings.bnb_4bit_compute_dtype, quant_type=settings.bnb_4bit_quant_type,
                    compress_statistics=settings.bnb_4bit_use_double_quant,
                )  # fmt: skip
                layer.weight = bnb.nn.Params4bit(
                    weight, requires_grad=False, quant_type=settings.bnb_4bit_quant_type,
                    compress_statistics=settings.bnb_4bit_use_double_quant,
                )  # fmt: skip
            else:
                layer = bnb.nn.Linear8bitLt(
                    child.in_features, child.out_features, bias=child.bias is not None,
                    has_fp16_weights=False, threshold=settings.llm_int8_threshold,
                )  # fmt: skip
                layer.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.data.to(torch.float16), requires_grad=False)
            setattr(parent, name, layer)
    model.to(device)  # bitsandbytes quantizes the weights as they move to the GPU
