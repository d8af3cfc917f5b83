"""Which samples train: the JSON's samples checked (`sgeo.pipeline.samples.check_sample`) and joined to the
store's rows by image id, with counts of what was skipped and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sgeo.errors import SgeoError
from sgeo.pipeline.samples import check_sample


def load_samples(path: str | Path) -> list:
    """The sample list of a LLaVA-format JSON file (each sample is checked by `join_samples`)."""
    from sgeo.pipeline.datasets import read_json_list

    samples = read_json_list(Path(path), "training JSON")
    if not samples:
        raise SgeoError(f"{path} holds no samples; pass a non-empty LLaVA-format JSON list")
    return samples


@dataclass
class JoinResult:
    samples: list[dict]  # kept samples, in JSON order (LLaVA's fixes applied)
    rows: list[int]  # store row of each kept sample, -1 when it has no image
    # kept_image, kept_text; skipped: failed, pending, absent, no_image, invalid; fixed: first_turn_not_human
    counts: Counter = field(default_factory=Counter)
    invalid: list[tuple[str, str]] = field(default_factory=list)  # (sample id, why it cannot train)
    indices: list[int] = field(default_factory=list)  # position in the JSON of each kept sample

    def name(self, k: int) -> str:
        """How messages name kept sample k: its id, else its position in the JSON (as `invalid` does)."""
        return str(self.samples[k].get("id", self.indices[k]))

    def drop(self, positions) -> None:
        """Leave out the kept samples at these positions (by position: ids may repeat or be missing)."""
        gone = set(positions)
        keep = [k for k in range(len(self.samples)) if k not in gone]
        self.samples = [self.samples[k] for k in keep]
        self.rows = [self.rows[k] for k in keep]
        self.indices = [self.indices[k] for k in keep]

    def summary(self) -> str:
        c = self.counts
        skipped = {k: c[k] for k in ("failed", "pending", "absent", "no_image", "invalid") if c[k]}
        text = f"{len(self.samples)} samples ({c['kept_image']} with an image, {c['kept_text']} text-only)"
        if skipped:
            text += "; skipped " + ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in skipped.items())
        if c["first_turn_not_human"]:
            text += (
                f"; dropped the first turn (not from the human, as LLaVA does) of {c['first_turn_not_human']}"
            )
        return text

    def refusal(self, path, limit: int = 3) -> str:
        """One line naming the first samples that cannot train."""
        shown = "; ".join(f"sample {sid}: {why}" for sid, why in self.invalid[:limit])
        more = f" (and {len(self.invalid) - limit} more)" if len(self.invalid) > limit else ""
        return (
            f"{path}: {len(self.invalid)} samples cannot be trained: {shown}{more}; fix them, or pass "
            "--skip-invalid to train without them"
        )


def join_samples(samples: list, statuses: dict[str, tuple[int, str]] | None, *,
                 needs_image: bool = False, exists=None) -> JoinResult:  # fmt: skip
    """Keep the samples that can train.

    statuses: image_id -> (row, status) from a store's manifest; an image not "ok" there is skipped
    ("failed", "pending" or, when not listed, "absent"). Without a store (online, no --store), `exists`
    decides which image files are present. needs_image: the `plain` template (stage 1) cannot take
    text-only samples ("no_image"). Samples that cannot be trained at all are listed in `invalid`.
    """
    result = JoinResult([], [])
    for i, raw in enumerate(samples):
        checked = check_sample(raw, needs_image=needs_image, plain=needs_image)
        if checked.fix:
            result.counts[checked.fix] += 1
        if checked.problem:
            result.counts["invalid"] += 1
            sample_id = raw.get("id", i) if isinstance(raw, dict) else i
            result.invalid.append((str(sample_id), checked.problem))
            continue
        sample = checked.sample
        if sample is None:
            continue
        image = sample.get("image")
        if image is None:
            result.samples.append(sample)
            result.rows.append(-1)
            result.indices.append(i)
            result.counts["kept_text"] += 1
            continue
        if statuses is not None:
            row, status = statuses.get(image, (-1, "absent"))
            if status != "ok":
                result.counts[status] += 1
                continue
        else:
            row = 0
            if exists is not None and not exists(image):
                result.counts["absent"] += 1
                continue
        result.samples.append(sample)
        result.rows.append(int(row))
        result.indices.append(i)
        result.counts["kept_image"] += 1
    return result


def manifest_statuses(store) -> dict[str, tuple[int, str]]:
    """image_id -> (row, status) of a FeatureStore or FeatureSet (anything with its `manifest()`)."""
    table = store.manifest()
    ids = table.column("image_id").to_pylist()
    rows = table.column("row").to_pylist()
    status = table.column("status").to_pylist()
    return {image_id: (int(row), s) for image_id, row, s in zip(ids, rows, status, strict=True)}
