"""A `TowerSpec` from a checkpoint on disk (what `sgeo compose --tower KIND=SOURCE` and the presets write)."""

from __future__ import annotations

from ...errors import SgeoError
from ..tower_spec import SUMMED, TowerSpec
from .registry import KINDS, tower_class


def parse_tower_option(text: str) -> tuple[str, str, int | list[int] | None]:
    """`KIND=SOURCE` or `KIND=SOURCE@LAYERS` (LAYERS: `-2`, or `-4,-3,-2,-1` for several) -> its parts."""
    kind, equals, rest = text.partition("=")
    if not equals or not rest:
        raise SgeoError(f"--tower {text!r}: write KIND=SOURCE (kinds: {', '.join(KINDS)})")
    if kind not in KINDS:
        raise SgeoError(f"--tower {text!r}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
    source, at, layer_text = rest.rpartition("@") if "@" in rest else (rest, "", "")
    layers = None
    if at:
        try:
            values = [int(v) for v in layer_text.split(",")]
        except ValueError:
            raise SgeoError(
                f"--tower {text!r}: layers {layer_text!r} are not integers (e.g. -2 or -4,-3,-2,-1)"
            ) from None
        layers = values if "," in layer_text else values[0]
    return kind, source, layers


def spec_from_source(kind: str, name: str, located, layers=None, shared_size: int | None = None) -> TowerSpec:
    """The spec of the `kind` checkpoint at `located` (read without loading its weights).

    The first tower (`shared_size` None) sets the shared pixels. A later tower reads them as they are where its
    kind does so by default (MoGe, as SpatialGeo does), else with its own statistics; a tower whose kind takes
    any size (DINOv2-based) reads them at the shared size, so its grid matches the first tower's.
    """
    cls = tower_class(kind)
    try:
        fields = cls.describe(located.path, layers)
    except (OSError, ValueError, KeyError) as error:
        raise SgeoError(f"--tower {kind}={located.name}: not a {kind} checkpoint ({error})") from None
    # a kind whose adapter is summed gives several layers (a list, even of one)
    several = cls.default_adapter.startswith(SUMMED)
    if several and isinstance(fields["layers"], int):
        fields["layers"] = [fields["layers"]]
    elif not several and not isinstance(fields["layers"], int):
        raise SgeoError(
            f"--tower {kind}={located.name}: a {kind} tower gives one layer (e.g. @-2), not {fields['layers']}"
        )
    image_size = fields.pop("image_size", None) or shared_size
    if image_size is None:  # a kind that takes any size (DINOv2-based) cannot set the shared pixels' size
        raise SgeoError(
            f"--tower {kind}={located.name}: a {kind} tower takes any image size, so it cannot come first; put a "
            "fixed-size tower (clip, siglip) first"
        )
    own = shared_size is not None and cls.default_input == "own"
    return TowerSpec(
        name=name, source=located.name, image_size=image_size, input="own" if own else "shared",
        adapter=cls.default_adapter, **fields,
    )  # fmt: skip
