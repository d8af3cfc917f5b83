"""The batch order: which samples each rank reads at each step, fixed by the seed for every epoch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


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
