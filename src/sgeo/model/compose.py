"""`sgeo compose`: a SpatialGeo model from parts: any causal LLM and a list of vision towers (SpatialGeo's:
a CLIP tower and a MoGe checkpoint; `--tower KIND=SOURCE`, in fusion order).

The model directory refers to its parts, as a LLaVA config refers to its vision tower: `config.json` names the
towers (`vision_towers`, each with its `source`) and the LLM (`llm_path`: an absolute path, or the hub id when it came from the
HF cache), so a 7B LLM's 14 GB are not copied. It holds what is new: both adapters, freshly initialised
(seeded), in `adapters.safetensors`; the LLM's tokenizer with `<image>` added (its chat template saved with it,
as transformers saves it); and `processor_config.json` naming the template the model speaks (`chat`: the LLM's
own; `vicuna_v1`: LLaVA-1.5's, for an LLM with none, e.g. Vicuna), the first tower's preprocessing, and the
LLM's `generation_config.json` eos ids, so generation stops at its end-of-turn tokens. `--clip-adapter
LLAVA_DIR` starts the `clip` tower's adapter from LLaVA-1.5's trained one where the widths fit; otherwise stage
1 trains every adapter (`trained_adapters`).

`load_composed` is the loader's road for such a directory (and for the stage-1 / LoRA outputs trained from
it, which keep referring to the LLM): the LLM through transformers' own loader from where it is, then the
adapters.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from ..errors import SgeoError, one_line
from .chat_template import CHAT, LLAVA_TEMPLATES, ChatTemplate, generation_eos_ids
from .hub import Located, locate_llm, locate_tower
from .modeling import ADAPTER_SUFFIX, absolute_tower_paths
from .towers.specs import parse_tower_option, spec_from_source

ADAPTERS_FILE = "adapters.safetensors"  # a model that refers to its LLM holds its adapters here
SPATIALGEO_TOWERS = ("clip", "moge")  # `sgeo compose` without --tower: SpatialGeo's kinds, named after them
SENTENCEPIECE = "tokenizer.model"  # a Llama SentencePiece tokenizer: LLaVA-1.5's own token rule applies


def compose(
    llm: str,
    towers: list[str],
    out: str | Path,
    template: str | None = None,
    seed: int = 0,
    clip_adapter: str | Path | None = None,
    fusion: str | None = None,
) -> dict:
    """Write the model directory `out`; returns what it is made of. `towers`: `KIND=SOURCE[@LAYERS]` in fusion
    order. Every check runs before anything is written, and the directory appears whole or not at all."""
    from accelerate import init_empty_weights

    from .modeling import SpatialGeoForCausalLM

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SgeoError(f"--out {out} exists and is not an empty directory; give a new one")
    llm_part = locate_llm(llm, None, "sgeo compose")
    text_config = _llm_config(llm_part)
    specs, first_path = tower_specs(towers)
    if clip_adapter is not None and "clip" not in [s.name for s in specs]:
        raise SgeoError("--clip-adapter starts the clip tower's adapter, and this model has no clip tower")
    processor = _processor(llm_part, specs, first_path, template)
    config = _config(llm_part, specs, text_config, processor, fusion, trained_clip=clip_adapter is not None)
    with init_empty_weights():  # the LLM's shape only: its weights stay where they are
        model = SpatialGeoForCausalLM(config)
    model.init_adapters(seed)
    if clip_adapter is not None:
        _load_llava_clip_adapter(model, Path(clip_adapter).expanduser())
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_referring(model, processor, staging)
        if out.exists():
            out.rmdir()  # empty (checked above)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "model": str(out),
        "llm": llm_part.name,
        "towers": {spec.name: spec.source for spec in specs},
        "template": processor.template_name,
        "tokenization": processor.tokenization,
        "stop_tokens": processor.tokenizer.convert_ids_to_tokens(processor.stop_token_ids),
        "trained_adapters": list(config.trained_adapters),
        "seed": seed,
    }


# -- parts -------------------------------------------------------------------------------------------
def _llm_config(llm: Located):
    """The LLM's config (any causal LM transformers knows, no remote code); a directory without weights is
    refused here rather than at the first load."""
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(llm.path)
    if not (directory / "config.json").is_file():
        raise SgeoError(f"--llm {llm.name}: {directory} has no config.json; give an LLM's directory")
    if not (any(directory.glob("*.safetensors")) or any(directory.glob("pytorch_model*.bin"))):
        raise SgeoError(f"--llm {llm.name}: {directory} holds no weights (*.safetensors, pytorch_model*.bin)")
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        detail = one_line(str(error), 200)
        raise SgeoError(f"--llm {llm.name}: cannot read {directory}/config.json: {detail}") from None
    if type(config) not in AutoModelForCausalLM._model_mapping:
        raise SgeoError(
            f"--llm {llm.name} is a {config.model_type!r} model, not a causal LM transformers can load; give a "
            "causal LLM (Qwen2, Llama, ...)"
        )
    return config


def _moge_file(moge: Located) -> Located:
    """A MoGe checkpoint directory (a hub snapshot, the tiny preset's `moge/`) -> its model.pt."""
    from .hub import MOGE_FILENAME

    path = Path(moge.path)
    if path.is_dir():
        if not (path / MOGE_FILENAME).is_file():
            raise SgeoError(
                f"--tower moge={moge.name}: {path} holds no {MOGE_FILENAME}; give the MoGe checkpoint"
            )
        file = str((path / MOGE_FILENAME).resolve())
        return Located(file, file if moge.name == moge.path else moge.name)
    return moge


def tower_specs(options: list[str]):
    """`KIND=SOURCE[@LAYERS]` options -> (TowerSpecs in fusion order, the first tower's local path). Each tower is
    named after its kind (`depth_anything`, then `depth_anything_2` for a second of the same kind)."""
    if not options:
        raise SgeoError(
            f"give the towers: --tower KIND=SOURCE, in fusion order (SpatialGeo: {', '.join(SPATIALGEO_TOWERS)})"
        )
    specs, names, paths = [], [], []
    for option in options:
        kind, source, layers = parse_tower_option(option)
        located = locate_tower(source, kind, None, "sgeo compose")
        if kind == "moge":
            located = _moge_file(located)
        name = kind if kind not in names else f"{kind}_{names.count(kind) + 1}"
        names.append(kind)
        specs.append(spec_from_source(kind, name, located, layers, specs[0].image_size if specs else None))
        paths.append(located.path)
    return specs, paths[0]


def _processor(llm: Located, specs, first_path: str, template: str | None):
    """The LLM's tokenizer (`<image>` added), the first tower's preprocessing and the template the model speaks."""
    from .processing import MODEL_TEMPLATES, SpatialGeoProcessor, build_image_processor, load_tokenizer
    from .reference import clip_image_processor
    from .towers.registry import tower_class

    name = template or CHAT
    if name not in MODEL_TEMPLATES:
        what = "stage 1's (captions only); a model speaks" if name == "plain" else "not a template; known:"
        raise SgeoError(f"--template {name}: {what} {', '.join(MODEL_TEMPLATES)}")
    tokenizer = load_tokenizer(llm.path)
    eos = generation_eos_ids(llm.path)
    if name == CHAT:
        ChatTemplate.from_tokenizer(tokenizer, eos_token_ids=eos)  # refuses, in one line, what cannot train
    elif tokenizer.eos_token != "</s>":
        # LLaVA's templates end each answer with "</s>": a tokenizer without it would train those characters
        # as text, and generation would never meet an end-of-sequence token
        raise SgeoError(
            f"--template {name} ends each answer with </s>, which is not this LLM's end-of-sequence token "
            f"({tokenizer.eos_token}); leave --template out to use the LLM's own chat template"
        )
    first = specs[0]
    kind = tower_class(first.kind)
    image_processor = (first.kind == "clip" and clip_image_processor(Located(first_path, first.source))) or (
        build_image_processor(first.image_size, kind.mean, kind.std)
    )
    llava_rule = name in LLAVA_TEMPLATES and (Path(llm.path) / SENTENCEPIECE).is_file()
    return SpatialGeoProcessor(
        image_processor, tokenizer, sum(spec.num_tokens for spec in specs),
        image_aspect_ratio="pad", model_max_length=2048, tokenization="llava" if llava_rule else "single_pass",
        template=name, eos_token_ids=eos,
    )  # fmt: skip


def _config(llm: Located, specs, text_config, processor, fusion: str | None, trained_clip: bool):
    from .configuration import SpatialGeoConfig

    if fusion is None:  # SpatialGeo's one-to-one interleave where the grids allow it
        fusion = "interleave" if len({s.num_tokens for s in specs}) == 1 else "concat"
    try:
        config = SpatialGeoConfig(
            vision_towers=[s.to_dict() for s in specs], text_config=text_config, fusion=fusion,
            image_token_id=processor.image_token_id, llm_path=llm.name,
            trained_adapters=["clip"] if trained_clip else [],
        )  # fmt: skip
    except ValueError as error:
        raise SgeoError(f"these parts do not make a SpatialGeo model: {error}") from None
    config.architectures = ["SpatialGeoForCausalLM"]
    return config


def _load_llava_clip_adapter(model, directory: Path) -> None:
    """LLaVA-1.5's trained CLIP adapter (`model.mm_projector.*`) into `model`, where its widths fit."""
    from .reference import adapter_state

    if not directory.is_dir():
        raise SgeoError(f"--clip-adapter {directory} is not a directory; give a LLaVA-1.5 checkpoint's")
    state = {k: v for k, v in adapter_state(directory).items() if k.startswith("clip_adapter.")}
    if not state:
        raise SgeoError(
            f"--clip-adapter {directory} holds no CLIP adapter (model.mm_projector.*); give a LLaVA-1.5 checkpoint"
        )
    ours = model.adapters()["clip"].state_dict()
    theirs = {k.removeprefix("clip_adapter."): v for k, v in state.items()}
    if set(theirs) != set(ours) or any(tuple(v.shape) != tuple(ours[k].shape) for k, v in theirs.items()):
        given = [tuple(theirs[k].shape) for k in sorted(theirs) if k.endswith("weight")]
        needed = [tuple(ours[k].shape) for k in sorted(ours) if k.endswith("weight")]
        raise SgeoError(
            f"--clip-adapter {directory}: its CLIP adapter's weights have shapes {given}, this model's "
            f"{needed} (CLIP width {model.config.tower('clip').hidden_size} -> LLM width {model.config.hidden_size}); "
            "give the LLaVA-1.5 trained on this CLIP and an LLM of this width, or leave the option out"
        )
    model.adapters()["clip"].load_state_dict({k: v.to(ours[k].dtype) for k, v in theirs.items()})


# -- a model that refers to its LLM --------------------------------------------------------------------
def save_referring(model, processor, directory: Path) -> None:
    """Config (naming the LLM and the towers), the adapters and the processor; not the LLM's weights."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    config.architectures = ["SpatialGeoForCausalLM"]
    with absolute_tower_paths(config):
        config.save_pretrained(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
             if k.startswith(adapter_prefixes(config))}  # fmt: skip
    save_file(state, directory / ADAPTERS_FILE, metadata={"format": "pt"})
    processor.save_pretrained(directory)


def load_composed(resolved, dtype=None, attn_implementation: str | None = None):
    """A model directory that refers to its LLM -> SpatialGeoForCausalLM (no towers, no LoRA yet)."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from .load_context import weights_errors
    from .modeling import SpatialGeoForCausalLM

    config = resolved.config
    kwargs = {"dtype": dtype or torch.float32}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    with weights_errors(f"the LLM {config.llm_path} ({resolved.base})"):
        llm = AutoModelForCausalLM.from_pretrained(resolved.base, trust_remote_code=False, **kwargs)
    if llm.config.hidden_size != config.hidden_size or type(llm.config) is not type(config.text_config):
        raise SgeoError(
            f"{resolved.directory} was composed from a {config.text_config.model_type} LLM of width "
            f"{config.hidden_size}; {resolved.base} holds a {llm.config.model_type} of width "
            f"{llm.config.hidden_size}; point llm_path in its config.json at the LLM it was composed from"
        )
    model = SpatialGeoForCausalLM.from_language_model(config, llm)
    file = resolved.directory / ADAPTERS_FILE
    if not file.is_file():
        raise SgeoError(
            f"{resolved.directory} has no {ADAPTERS_FILE}; a composed model keeps its adapters there"
        )
    with weights_errors(str(file)), safe_open(str(file), framework="pt") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(adapter_prefixes(config))}
    wrong = sorted(set(state) ^ set(expected)) or [k for k in state if state[k].shape != expected[k].shape]
    if wrong:
        raise SgeoError(
            f"{file} does not fit the model's config.json ({wrong[0]}); restore the model directory"
        )
    dtype = next(llm.parameters()).dtype
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    return model


def adapter_prefixes(config) -> tuple[str, ...]:
    """The state-dict prefixes of the adapters (`clip_adapter.`, `moge_adapter.`, ...)."""
    return tuple(f"{name}{ADAPTER_SUFFIX}." for name in config.tower_names)
