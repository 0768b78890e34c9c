"""Samplers and the training loader: multi-process and resumed runs see the data one uninterrupted run sees.

Both samplers subclass ``DistributedSampler`` so that Lightning keeps them instead of
putting its own (padding, repeating) sampler in their place under DDP.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Set

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class BatchShardSampler(DistributedSampler):
    """Evaluation order: the single-process batches, dealt whole to the ranks in turn, none repeated.

    Batch ``b`` holds indices ``b * batch_size ...`` of ``order`` (default: the
    dataset's) exactly as on one process, so its noise (seeded from its first
    index) and its outputs do not depend on the number of ranks; there is no
    padding, so no index is evaluated twice. Batches whose every index is in
    ``skip`` (already predicted) are left out.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        skip: Set[int] = frozenset(),
        order: Sequence[int] | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        size = len(dataset)
        order = range(size) if order is None else order
        batches = [order[start : start + batch_size] for start in range(0, size, batch_size)]
        pending = [batch for batch in batches if not set(batch) <= skip]
        self.indices = [index for batch in pending[rank::num_replicas] for index in batch]
        self.num_samples = self.total_size = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableShuffleSampler(DistributedSampler):
    """Training order: a permutation drawn from ``(seed, epoch)``, sharded over ranks, resumable mid-epoch.

    The permutation does not depend on the global random state, so a resumed
    run shuffles its epochs as the uninterrupted run did; ``resume_at(epoch, n)``
    makes that epoch start after the ``n`` samples this rank had already
    trained on (any other epoch starts at its beginning). With ``lengths`` and
    ``batch_size``, each rank's order is length-bucketed (``length_bucketed``).
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        lengths: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        if (lengths is None) != (batch_size is None):
            raise ValueError("length bucketing needs both the lengths and the batch size")
        self.lengths, self.batch_size = lengths, batch_size
        self._resume = (0, 0)

    def resume_at(self, epoch: int, samples: int) -> None:
        self._resume = (epoch, samples)

    @property
    def start(self) -> int:
        """Samples of the current epoch skipped because a resumed run had trained on them."""
        epoch, samples = self._resume
        return samples if epoch == self.epoch else 0

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        if self.lengths is not None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 1)
            order = length_bucketed(order, self.lengths, self.batch_size, generator)
        return iter(order[self.start :])


POOL_BATCHES = 64
"""Batches per pool that ``length_bucketed`` sorts: enough for tight lengths, few enough to stay random."""


def length_bucketed(order: list[int], lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[int]:
    """``order`` regrouped so that consecutive ``batch_size`` indices have similar lengths.

    Pools of ``POOL_BATCHES`` batches of the (shuffled) order are sorted by
    length and cut into batches; the full batches of the epoch are then
    shuffled, and an incomplete last one stays last (the loader drops it).
    Every index is kept exactly once.
    """
    batches = []
    pool_size = batch_size * POOL_BATCHES
    for start in range(0, len(order), pool_size):
        pool = sorted(order[start : start + pool_size], key=lambda index: lengths[index])
        batches.extend(pool[i : i + batch_size] for i in range(0, len(pool), batch_size))
    last = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return [index for batch in shuffled + last for index in batch]


class ResumableLoader(DataLoader):
    """Training batches whose position inside the epoch a checkpoint saves and a resumed run restores.

    Lightning saves ``state_dict()`` of a stateful training loader with every
    checkpoint and passes it to ``load_state_dict`` before iterating on resume.
    The state is the epoch and how many of its samples were yielded: Lightning
    does not prefetch from a loader with a length, so that is what training
    took, with any number of workers. A dataset that draws per epoch (QQP's
    swaps) is told the epoch before the workers copy it.
    """

    def __init__(self, dataset: Dataset, sampler: ResumableShuffleSampler, batch_size: int, **kwargs) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self._yielded = 0

    def __iter__(self) -> Iterator:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.sampler.epoch)
        self._yielded = self.sampler.start
        for batch in super().__iter__():
            self._yielded += self.batch_size
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "samples": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at(state["epoch"], state["samples"])
