"""What a store's root says about it before it is opened: its group attributes (zarr.json), whether this sgeo
reads them, and which commit markers exist now."""

from __future__ import annotations

import json

from sgeo.cache import layout
from sgeo.cache.layout import COMMITS, GROUP_META
from sgeo.cache.location import Location
from sgeo.errors import SgeoError


def read_group_attrs(loc: Location) -> dict | None:
    """Attributes of the root zarr.json, or None when there is none."""
    loc.check_not_file()
    if not loc.exists(GROUP_META):
        return None
    try:
        meta = json.loads(loc.cat(GROUP_META))
    except (ValueError, UnicodeDecodeError) as e:
        raise SgeoError(f"{loc.url}/zarr.json is not valid JSON ({e}); the store is damaged") from e
    return meta.get("attributes", {}) if meta.get("node_type") == "group" else {}


def check_readable(url: str, attrs: dict) -> None:
    """Refuse group attributes this sgeo cannot read: another schema version, the retired compressor option."""
    version = attrs.get("sgeo_schema_version")
    if version not in layout.READABLE_SCHEMA_VERSIONS:
        raise SgeoError(
            f"store {url} has schema version {version}, this sgeo reads "
            f"{' and '.join(map(str, layout.READABLE_SCHEMA_VERSIONS))}; "
            "use the sgeo version that wrote it or re-extract"
        )
    if attrs.get("compressor") is not None:
        raise SgeoError(
            f"store {url} uses the retired compressor option {attrs['compressor']!r}; "
            "re-extract it with --dtype bf16-zstd"
        )


def marker_names(loc: Location) -> dict[str, int]:
    """Commit marker file name -> shard, of the markers that exist now."""
    return {n: k for n in loc.listdir(COMMITS) if (k := layout.parse_marker_name(n)) is not None}
