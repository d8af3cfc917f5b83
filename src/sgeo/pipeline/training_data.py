"""Training data: LLaVA-format JSON samples joined to feature-store rows, in a seeded batch order.

- `load_samples` reads the JSON; `join_samples` keeps the samples whose image is committed "ok" in the
  store (by image id, through the manifest) and counts the rest; text-only samples are kept.
- `TrainingDataset` tokenizes one sample and names its store row (cached) or decodes its pixels (online).
- `Collator` pads a micro-batch and stacks the features of the samples that have an image, in batch
  order (the order of their image tokens); it reads all rows of a batch with one store call.
- `BatchPlan` fixes the order of every epoch from the seed (optionally LLaVA's modality- and
  length-grouped order), so a resumed run sees exactly the batches an uninterrupted one would.
- `Prefetcher` receives the DataLoader workers' batches on a thread, so the step never pays for it.

Nothing here runs an encoder: online batches carry pixels, which the trainer encodes.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sgeo.errors import SgeoError
from sgeo.model.conversation import IGNORE_INDEX
from sgeo.pipeline.features import decode
from sgeo.pipeline.samples import IMAGE_TOKEN, check_sample


# -- samples ---------------------------------------------------------------------------------------
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


def images_past_the_cut(join: JoinResult, processor, template: str) -> list[tuple[int, str]]:
    """(position in `join.samples`, why) of the samples whose `<image>` would fall after `model_max_length`
    (they cannot train; LLaVA would crash).

    Cheap: a token covers at least one UTF-8 byte, so the text before the image has at most that many tokens
    (plus BOS and a word-start piece); only samples over that bound are tokenized exactly."""
    from sgeo.model.conversation import render

    limit, width = processor.model_max_length, processor.num_image_tokens
    found = []
    for i, (sample, row) in enumerate(zip(join.samples, join.rows, strict=True)):
        if row < 0:
            continue
        text, _ = render(template, sample["conversations"])
        if len(text[: text.index(IMAGE_TOKEN)].encode()) + 2 + width <= limit:
            continue
        try:
            processor.tokenize(sample["conversations"], template)
        except ValueError as error:
            found.append((i, str(error)))
    return found


def unsupervised_samples(join: JoinResult, processor, template: str, limit: int = 256):
    """(ids, checked) of the samples among the first `limit` whose labels are all ignored (an early warning
    that the tokenizer and the template disagree); None when every checked sample trains."""
    found, checked = [], 0
    for i, sample in enumerate(join.samples[:limit]):
        if not any(turn["value"].strip() for turn in sample["conversations"][1::2]):
            continue  # nothing to supervise in the first place
        checked += 1
        try:
            labels = processor.tokenize(sample["conversations"], template)["labels"]
        except ValueError:
            continue  # reported by images_past_the_cut
        if all(label == IGNORE_INDEX for label in labels):
            found.append(join.name(i))
    return (found, checked) if found else None


def manifest_statuses(features) -> dict[str, tuple[int, str]]:
    """image_id -> (row, status) of a FeatureStore (or anything with its `manifest()`)."""
    table = features.manifest()
    ids = table.column("image_id").to_pylist()
    rows = table.column("row").to_pylist()
    status = table.column("status").to_pylist()
    return {image_id: (int(row), s) for image_id, row, s in zip(ids, rows, status, strict=True)}


def estimated_length(sample: dict, num_image_tokens: int) -> int:
    """LLaVA's `modality_lengths`: words of the conversation, plus the visual tokens of an image."""
    words = sum(len(str(turn.get("value") or "").split()) for turn in sample["conversations"])
    return words + (num_image_tokens if "image" in sample else 0)


# -- features --------------------------------------------------------------------------------------
def drop_clip(clip: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Zero each image's CLIP features [I, T, Dc] with probability p (the reference's clip-drop ablation)."""
    if p <= 0 or clip.shape[0] == 0:
        return clip
    keep = torch.rand(clip.shape[0], generator=generator) >= p  # [I], drawn on the CPU generator
    return clip * keep.to(clip.device, clip.dtype).view(-1, *[1] * (clip.dim() - 1))


# -- dataset and collator --------------------------------------------------------------------------
class TrainingDataset(torch.utils.data.Dataset):
    """Item i: tokens of sample i and either its store row (cached) or its pixels (online)."""

    def __init__(self, join: JoinResult, processor, template: str, image_root: str | Path | None = None):
        self.samples, self.rows = join.samples, join.rows
        self.names = [join.name(k) for k in range(len(join.samples))]
        self.processor, self.template = processor, template
        self.image_root = None if image_root is None else Path(image_root)

    def __len__(self) -> int:
        return len(self.samples)

    def has_image(self) -> list[bool]:
        return [row >= 0 for row in self.rows]

    def lengths(self) -> list[int]:
        return [estimated_length(s, self.processor.num_image_tokens) for s in self.samples]

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        try:
            item = dict(self.processor.tokenize(sample["conversations"], self.template))
        except ValueError as error:
            raise SgeoError(f"sample {self.names[i]!r}: {error}") from None
        item["row"] = self.rows[i]
        item["id"] = self.names[i]
        if self.image_root is not None and self.rows[i] >= 0:
            from sgeo.pipeline.images import load_image, resolve_inside

            image, _ = load_image(resolve_inside(self.image_root, sample["image"]))
            item["pixel_values"] = self.processor.preprocess_images([image])[0]  # [3, S, S]
        return item


class Collator:
    """Items -> a padded batch with `image_features` {tower: [I, ...]} (cached) or `pixel_values` [I, 3, S, S]
    (online), I = the items with an image, in batch order. I may be 0: the trainer still runs the adapters (on
    nothing) so every rank's graph holds the same parameters. `shapes`: {tower: feature shape per image}."""

    def __init__(self, processor, features=None, shapes: dict | None = None):
        self.processor, self.features = processor, features
        self.shapes = {name: tuple(shape) for name, shape in (shapes or {}).items()}

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.processor.pad([{"input_ids": it["input_ids"], "labels": it["labels"]} for it in items])
        batch["ids"] = [it.get("id", "") for it in items]  # sample ids, for errors that name the samples
        with_image = [it for it in items if it["row"] >= 0]
        if not with_image:
            batch["image_features"] = {name: torch.zeros((0, *shape)) for name, shape in self.shapes.items()}
        elif "pixel_values" in with_image[0]:
            batch["pixel_values"] = torch.stack([it["pixel_values"] for it in with_image])  # [I, 3, S, S]
        else:
            words = self.features.read(np.array([it["row"] for it in with_image], dtype=np.int64))
            dtypes = getattr(self.features, "dtypes", None) or dict.fromkeys(words, self.features.dtype)
            batch["image_features"] = {name: decode(w, dtypes[name]) for name, w in words.items()}  # [I, ...]
        return batch


# -- batch order -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchPlan:
    """Which samples each rank reads at each step. Epoch e's order depends only on (seed, e).

    A global micro-batch is `micro_batch * world_size` samples; rank r reads its r-th slice. An epoch has
    `steps_per_epoch` optimizer steps of `accum` global micro-batches; the samples that do not fill a
    whole step are left out of that epoch (a different few each epoch).
    """

    num_samples: int
    micro_batch: int
    world_size: int
    accum: int
    seed: int
    lengths: tuple[int, ...] | None = None  # set: LLaVA's modality- and length-grouped order
    has_image: tuple[bool, ...] | None = None

    @property
    def global_micro(self) -> int:
        return self.micro_batch * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_micro // self.accum

    @property
    def samples_per_epoch(self) -> int:
        return self.steps_per_epoch * self.accum * self.global_micro

    def epoch_order(self, epoch: int) -> list[list[int]]:
        """The global micro-batches of one epoch (each `global_micro` sample indices)."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.lengths is None:
            order = torch.randperm(self.num_samples, generator=generator).tolist()
            batches = [order[i : i + self.global_micro] for i in range(0, len(order), self.global_micro)]
        else:
            batches = self._grouped(generator)
        return [b for b in batches if len(b) == self.global_micro][: self.steps_per_epoch * self.accum]

    def _grouped(self, generator: torch.Generator) -> list[list[int]]:
        # LLaVA's get_modality_length_grouped_indices: image and text-only samples never share a
        # micro-batch; within a shuffled megabatch, samples are sorted by length, longest first, and dealt
        # to the ranks in turn so every rank gets similar lengths. Megabatches are then shuffled.
        size = self.global_micro
        has_image = self.has_image or (True,) * self.num_samples
        megabatches, leftovers = [], []
        for modality in (True, False):
            idx = [i for i in range(self.num_samples) if has_image[i] == modality]
            perm = [idx[j] for j in torch.randperm(len(idx), generator=generator).tolist()]
            for start in range(0, len(perm), size):
                mega = sorted(perm[start : start + size], key=lambda i: -self.lengths[i])
                if len(mega) < size:
                    leftovers.extend(mega)
                    continue
                megabatches.append([i for r in range(self.world_size) for i in mega[r :: self.world_size]])
        order = torch.randperm(len(megabatches), generator=generator).tolist()
        leftovers = sorted(
            leftovers, key=lambda i: -self.lengths[i]
        )  # mixed modalities, as LLaVA's last batch
        return [megabatches[j] for j in order] + [
            leftovers[i : i + size] for i in range(0, len(leftovers), size)
        ]

    def rank_batches(self, rank: int, start_step: int, stop_step: int) -> Iterator[list[int]]:
        """Rank `rank`'s micro-batches for optimizer steps [start_step, stop_step), across epochs."""
        step, per_epoch = start_step, self.steps_per_epoch
        while step < stop_step:
            epoch, in_epoch = divmod(step, per_epoch)
            order = self.epoch_order(epoch)
            last = min(per_epoch, in_epoch + stop_step - step)
            for batch in order[in_epoch * self.accum : last * self.accum]:
                yield batch[rank * self.micro_batch : (rank + 1) * self.micro_batch]
            step += last - in_epoch


class RankBatchSampler(torch.utils.data.Sampler):
    """A DataLoader batch sampler over `BatchPlan.rank_batches`."""

    def __init__(self, plan: BatchPlan, rank: int, start_step: int, stop_step: int):
        self.plan, self.rank, self.start_step, self.stop_step = plan, rank, start_step, stop_step

    def __iter__(self) -> Iterator[list[int]]:
        return self.plan.rank_batches(self.rank, self.start_step, self.stop_step)

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step) * self.plan.accum


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class Prefetcher:
    """Iterates `iterable` on a background thread, up to `depth` items ahead, in order.

    Receiving a batch from DataLoader workers (unpickling, opening shared-memory tensors) costs the
    receiving thread a few ms; done here, it overlaps the step (torch releases the GIL) instead of adding
    to it. Errors are raised by `__next__`; `close` stops the thread.
    """

    def __init__(self, iterable, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        iterator = iter(iterable)  # here, not on the thread: DataLoader forks its workers in iter()
        self._thread = threading.Thread(target=self._run, args=(iterator,), name="sgeo-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, iterator) -> None:
        try:
            for item in iterator:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as error:  # handed to the consumer
            self._put(_Raised(error))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)
            raise StopIteration
        if isinstance(item, _Raised):
            raise item.error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
