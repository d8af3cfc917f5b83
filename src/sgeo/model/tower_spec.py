"""`TowerSpec`: one frozen vision encoder of a model, as its config lists it (a leaf: no modeling code).

A model's towers are a list in fusion order. Each names its kind (a key of `towers.registry.KINDS`), where its
weights are (`source`: a path, absolute or relative to the model directory, or a hub id found locally), which
layers it contributes, how it reads the shared pixels, and the adapter that maps its features to the LLM:

- `layers`: an int is one hidden state (features [T, D]); a list is several (features [L, T, D]). Indices
  count as transformers' `hidden_states` do: 0 is the embeddings, k the output of block k, -1 the last block.
  LLaVA-1.5's CLIP is `-2`; SpatialGeo's MoGe is `[-4, -3, -2, -1]` (its last four blocks).
- `input`: `shared` reads the pixels as the processor prepared them for the first tower (CLIP's statistics in
  LLaVA); `own` re-normalises them to the kind's own statistics (MoGe's ImageNet ones) and resizes them to
  `image_size` where that differs. Images are decoded and preprocessed once, whatever the number of towers.
- `adapter`: `mlp2x_gelu` or `linear` for one layer; `summed_mlp2x_gelu` / `summed_linear` for several (one
  adapter per layer, outputs summed: SpatialGeo's MoGe adapter).
- `options`: what the kind needs to build the encoder without its weights (e.g. the HF vision config) and
  kind-specific choices (open_clip's model name, MoGe's backbone name).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

ADAPTERS = ("linear", "mlp2x_gelu")  # one layer -> LLM width
SUMMED = "summed_"  # prefix: one adapter per layer, outputs summed
ADAPTER_CHOICES = (*ADAPTERS, *(SUMMED + a for a in ADAPTERS))
INPUTS = ("shared", "own")
NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # a tower's name is its adapter's module prefix and its store array


@dataclass
class TowerSpec:
    name: str
    kind: str
    source: str | None
    layers: int | list[int]
    hidden_size: int
    patch_size: int
    image_size: int
    input: str = "shared"
    adapter: str = "mlp2x_gelu"
    options: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> TowerSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"tower {data.get('name')!r} has unknown fields {unknown}; known: {sorted(known)}"
            )
        spec = cls(**data)
        if isinstance(spec.layers, (list, tuple)):
            spec.layers = [int(i) for i in spec.layers]
        return spec

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def grid(self) -> int:
        """Tokens per side of the image."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """T: tokens per image."""
        return self.grid**2

    @property
    def multi_layer(self) -> bool:
        return isinstance(self.layers, list)

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """What the tower gives per image and its feature store holds: (T, D) or (L, T, D)."""
        if self.multi_layer:
            return (len(self.layers), self.num_tokens, self.hidden_size)
        return (self.num_tokens, self.hidden_size)

    def validate(self, kinds) -> None:
        def check(value, allowed, what):
            if value not in allowed:
                raise ValueError(f"tower {self.name!r}: {what}={value!r} is not one of {list(allowed)}")

        if not isinstance(self.name, str) or not NAME.match(self.name):
            raise ValueError(f"tower name {self.name!r} must be a lower-case identifier ([a-z][a-z0-9_]*)")
        check(self.kind, kinds, "kind")
        check(self.input, INPUTS, "input")
        check(self.adapter, ADAPTER_CHOICES, "adapter")
        if self.multi_layer != self.adapter.startswith(SUMMED):
            raise ValueError(
                f"tower {self.name!r}: layers={self.layers!r} needs a "
                f"{'summed_' if self.multi_layer else 'single-layer '}adapter, got {self.adapter!r}"
            )
        if self.multi_layer and not self.layers:
            raise ValueError(f"tower {self.name!r}: layers is an empty list")
        if min(self.hidden_size, self.patch_size, self.image_size) < 1:
            raise ValueError(f"tower {self.name!r}: hidden_size, patch_size and image_size must be positive")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"tower {self.name!r}: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )

    @property
    def adapter_layer_type(self) -> str:
        """The adapter of one layer (`mlp2x_gelu` for `summed_mlp2x_gelu`)."""
        return self.adapter.removeprefix(SUMMED)


def last_layers(n: int) -> list[int]:
    """The last n blocks' outputs as hidden-state indices: 4 -> [-4, -3, -2, -1]."""
    return list(range(-n, 0))
