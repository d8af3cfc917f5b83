"""The feature stores a training run reads, one per tower, joined by image id and read as one.

`sgeo extract` writes a store per tower (`<dir>/<tower>`), fingerprinted by that tower alone, so an ablation
that swaps one tower re-encodes that tower only. A store written before towers were a list holds `clip` and
`moge` in one group and serves both. `open_feature_set` finds, for each tower of the model, the store that
holds it (refusing a missing or mismatched one in one line); `FeatureSet` then reads a batch's rows from each
and answers the trainer's questions (which images are usable, their rows) over all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from sgeo.cache.layout import GROUP_META  # what makes a directory a store
from sgeo.errors import SgeoError


def stores_inside(path: str, storage_options: dict | None = None) -> list[str] | None:
    """None when `path` is a store itself; else the stores directly inside it (sorted; [] for none), as
    `sgeo extract` writes one per tower."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(Path(path).expanduser()) if "://" not in str(path) else str(path),
                                     **(storage_options or {}))  # fmt: skip
    if fs.exists(f"{root}/{GROUP_META}"):
        return None
    if not fs.isdir(root):
        return []
    names = sorted(p.rstrip("/").rpartition("/")[2] for p in fs.ls(root, detail=False)
                   if fs.exists(f"{p.rstrip('/')}/{GROUP_META}"))  # fmt: skip
    return [f"{str(path).rstrip('/')}/{name}" for name in names]


def store_paths(paths: list[str], storage_options: dict | None = None) -> list[str]:
    """`--store` values -> store URLs: a store as it is, a directory of stores -> each store in it (sorted)."""
    out = []
    for path in paths:
        inside = stores_inside(path, storage_options)
        if inside == []:
            raise SgeoError(
                f"--store {path} is neither a feature store nor a directory of stores; run `sgeo extract` first"
            )
        out.extend([str(path)] if inside is None else inside)
    return out


class FeatureSet:
    """Several stores, each serving some towers, read as one: rows are the first store's; the others are
    matched to them by image id. An image is usable where every store holds it "ok"."""

    def __init__(self, parts: dict[str, tuple[object, str]]):
        # tower name -> (store, its array holding that tower's features), in the model's tower order
        self.parts = parts
        # each store once, first seen first
        stores = list(dict.fromkeys(store for store, _ in parts.values()))
        self.anchor = stores[0]
        ids = self.anchor.image_ids()
        self.num_rows = len(ids)
        self._rows = {id(self.anchor): None}  # None: the anchor's own rows
        for store in stores[1:]:
            theirs = store.image_ids()
            if theirs == ids:
                self._rows[id(store)] = None
                continue
            where = {image_id: row for row, image_id in enumerate(theirs)}
            self._rows[id(store)] = np.array([where.get(i, -1) for i in ids], dtype=np.int64)
        self._stores = stores
        self.url = " + ".join(store.url for store in stores)
        self.dtypes = {name: store.dtype for name, (store, _) in parts.items()}
        # the first store's (the trainer reads its preprocessing; each store's is checked against the model)
        self.fingerprint = self.anchor.fingerprint

    def manifest(self) -> pa.Table:
        """The first store's manifest, a row "ok" only where every store holds its image "ok"."""
        table = self.anchor.manifest()
        status = table.column("status").to_pylist()
        for store in self._stores[1:]:
            theirs = store.manifest().column("status").to_pylist()
            rows = self._rows[id(store)]
            for r in range(self.num_rows):
                other = theirs[r] if rows is None else (theirs[rows[r]] if rows[r] >= 0 else "absent")
                if status[r] == "ok" and other != "ok":
                    status[r] = other
        index = table.schema.get_field_index("status")
        return table.set_column(index, "status", pa.array(status, pa.string()))

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """{tower: stored words [n, ...]} of the first store's `rows` (decode with `dtypes[tower]`)."""
        rows = np.asarray(rows, dtype=np.int64)
        words = {}
        for store in self._stores:  # one read per store, of every array it serves (a store of both towers)
            arrays = [array for held, array in self.parts.values() if held is store]
            mapped = self._rows[id(store)]
            words.update(store.read(rows if mapped is None else mapped[rows], arrays=arrays))
        return {name: words[array] for name, (_, array) in self.parts.items()}

    def close(self) -> None:
        for store in self._stores:
            store.close()


def open_feature_set(paths: list[str], towers: list[str], storage_options=None) -> FeatureSet:
    """The stores at `paths` (stores or directories of stores) serving every tower in `towers`, read as one;
    a tower no store holds is refused in one line."""
    from sgeo.cache import FeatureStore
    from sgeo.model.tower_fingerprint import stored_towers

    stores = [
        FeatureStore.open(p, storage_options=storage_options) for p in store_paths(paths, storage_options)
    ]
    parts = {}
    for name in towers:
        holders = [s for s in stores if name in stored_towers(s.fingerprint) and name in s.array_names]
        if not holders:
            held = sorted({t for s in stores for t in stored_towers(s.fingerprint)})
            raise SgeoError(
                f"no store holds the features of the model's {name} tower (the stores hold "
                f"{', '.join(held) or 'none'}); run `sgeo extract` with this model and pass its stores with --store"
            )
        parts[name] = (holders[0], name)
    return FeatureSet(parts)


def check_feature_set(feature_set, expected: dict[str, dict], preprocessing: dict) -> None:
    """Refuse a FeatureSet (or one store) made by other towers ({name: tower fingerprint}) or other
    preprocessing, in one line naming the store and the first difference. Each store's encoding is its own
    business."""
    from sgeo.cache import check_fingerprint
    from sgeo.model.tower_fingerprint import stored_towers

    parts = getattr(feature_set, "parts", None) or {name: (feature_set, name) for name in expected}
    for name, want in expected.items():
        store = parts[name][0]
        towers = stored_towers(store.fingerprint)
        stored = {"tower": towers.get(name), "preprocessing": store.fingerprint.get("preprocessing")}
        check_fingerprint(
            getattr(store, "url", "(in memory)"), stored, {"tower": want, "preprocessing": preprocessing}
        )
