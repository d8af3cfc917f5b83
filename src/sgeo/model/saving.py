"""Saving a trained model as an HF directory that `load_model(dir)` reads back.

Without LoRA: `save_pretrained` of model and processor. With LoRA (stage 2): the LoRA adapter in peft
format under `dir/lora/`, the base weights (adapters + the unchanged LLM, no LoRA keys) in `dir/`, and,
when asked, the LoRA-merged model under `dir/merged/` (a plain model directory without `lora/`).

A model that refers to its LLM (composed by `sgeo compose`) keeps referring to it while the LLM is unchanged
(stage 1; stage 2 with LoRA, whose adapter is `lora/`): `dir/` then holds the adapters alone. A changed LLM
(`--lora-r 0`, `merged/`) is saved whole and no longer refers to the original.
"""

from __future__ import annotations

from pathlib import Path

LORA_DIR = "lora"
MERGED_DIR = "merged"


def has_lora(model) -> bool:
    from peft import PeftModel

    return isinstance(model.language_model, PeftModel)


def save_trained(model, processor, out: str | Path, merge_lora: bool = False) -> dict[str, Path]:
    """Write `model` to `out`; returns the directories written. Unwraps (so consumes) a LoRA model."""
    out = Path(out)
    written = {"model": out}
    if has_lora(model):
        from peft import PeftModel

        model.language_model.save_pretrained(out / LORA_DIR)
        written["lora"] = out / LORA_DIR
        model.language_model = model.language_model.unload()  # the base LLM with its LoRA layers removed
        _save(model, processor, out, llm_changed=False)
        if merge_lora:
            # Merged from the adapter just written, so merged/ is exactly what `load_model(out)` computes.
            lora = PeftModel.from_pretrained(model.language_model, out / LORA_DIR)
            model.language_model = lora.merge_and_unload()
            _save(model, processor, out / MERGED_DIR, llm_changed=True)
            written["merged"] = out / MERGED_DIR
    else:
        # a frozen LLM (stage 1) is the one it was loaded from; one that trained has changed
        changed = any(p.requires_grad for p in model.language_model.parameters())
        _save(model, processor, out, llm_changed=changed)
    return written


def _save(model, processor, directory: Path, llm_changed: bool = True) -> None:
    from .load_context import quiet_loading

    directory.mkdir(parents=True, exist_ok=True)
    llm_path = getattr(model.config, "llm_path", None)
    with quiet_loading():  # no "Writing model shards" bar per file
        if llm_path and not llm_changed:
            from .compose import save_referring

            save_referring(model, processor, directory)
            return
        model.config.llm_path = None  # the LLM's weights are in this directory now
        try:
            model.save_pretrained(directory)
        finally:
            model.config.llm_path = llm_path
        processor.save_pretrained(directory)
