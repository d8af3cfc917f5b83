"""What every tower kind shares: the spec it was built from, how it reads the shared pixels, its fingerprint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..tower_spec import TowerSpec


@dataclass(frozen=True)
class SharedPixels:
    """What the processor hands every tower: pixels of `size` normalised with (`mean`, `std`)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class Tower(nn.Module):
    """A frozen encoder built from a `TowerSpec`; `forward(pixels)` -> features of `spec.feature_shape`.

    Subclasses set `kind`, their own input statistics (`mean`, `std`) and implement `encode` (pixels as the kind
    reads them -> features) and `describe` (a checkpoint's geometry, read without loading its weights). `path`
    None builds the architecture with random weights (on the meta device for parameter counting).
    """

    kind: ClassVar[str]
    mean: ClassVar[tuple[float, float, float]]
    std: ClassVar[tuple[float, float, float]]
    default_adapter: ClassVar[str] = "mlp2x_gelu"  # `summed_mlp2x_gelu` for kinds that give several layers
    default_input: ClassVar[str] = "own"  # how it reads the shared pixels when it is not the first tower

    def __init__(self, spec: TowerSpec, shared: SharedPixels):
        super().__init__()
        self.spec = spec
        self.shared = shared
        self.renormalise = spec.input == "own" and (self.mean, self.std) != (shared.mean, shared.std)
        self.resize = spec.input == "own" and spec.image_size != shared.size
        if self.renormalise:
            for name, values in (("shared_mean", shared.mean), ("shared_std", shared.std),
                                 ("own_mean", self.mean), ("own_std", self.std)):  # fmt: skip
                self.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1), persistent=False)

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """The shared pixels as this kind reads them (its own statistics and size when `input` is `own`)."""
        x = pixels
        if self.renormalise:
            x = ((x * self.shared_std + self.shared_mean) - self.own_mean) / self.own_std
        if self.resize:
            x = torch.nn.functional.interpolate(
                x, size=(self.spec.image_size, self.spec.image_size), mode="bicubic", align_corners=False,
                antialias=True,
            )  # fmt: skip
        return x

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.encode(self.prepare(pixel_values))

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def describe(cls, path: str, layers=None) -> dict:
        """The spec fields of the checkpoint at `path` (kind, layers, sizes, options), without loading weights."""
        raise NotImplementedError

    @classmethod
    def fingerprint(cls, spec: TowerSpec, weights: str) -> dict:
        """Everything that decides this tower's stored numbers (the store refuses features made otherwise)."""
        return {
            "kind": spec.kind,
            "weights": weights,
            "layers": spec.layers,
            "input": spec.input,
            "image_size": spec.image_size,
            "shape": list(spec.feature_shape),
        }


def block_indices(layers: int | list[int], depth: int) -> list[int]:
    """Hidden-state indices (0 = embeddings, k = output of block k, negative from the end) -> 0-based blocks.

    Raises ValueError for an index that names no block (the embeddings, or beyond the depth)."""
    out = []
    for index in [layers] if isinstance(layers, int) else layers:
        block = depth + index if index < 0 else index - 1
        if not 0 <= block < depth:
            raise ValueError(
                f"layer {index} names none of the {depth} blocks (use 1..{depth} or -{depth}..-1)"
            )
        out.append(block)
    if out != sorted(set(out)):
        raise ValueError(f"layers {layers} must name distinct blocks in increasing order")
    return out
