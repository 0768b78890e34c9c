"""Samplers that make multi-process runs and resumed runs see the data a single uninterrupted run sees.

Both subclass ``DistributedSampler`` so that Lightning keeps them instead of
putting its own (padding, repeating) sampler in their place under DDP.
"""

from __future__ import annotations

from collections.abc import Iterator, Set

from torch.utils.data import Dataset, DistributedSampler


class BatchShardSampler(DistributedSampler):
    """Evaluation order: the single-process batches, dealt whole to the ranks in turn, none repeated.

    Batch ``b`` holds indices ``b * batch_size ...`` exactly as on one process,
    so its noise (seeded from its first index) and its outputs do not depend on
    the number of ranks; there is no padding, so no index is evaluated twice.
    Batches whose every index is in ``skip`` (already predicted) are left out.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0, skip: Set[int] = frozenset()
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        size = len(dataset)
        batches = [range(start, min(start + batch_size, size)) for start in range(0, size, batch_size)]
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
    run shuffles its epochs as the uninterrupted run did; ``resume_at(n)``
    makes the next epoch start after the ``n`` samples this rank had already
    trained on.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self._start = 0

    def resume_at(self, samples: int) -> None:
        self._start = samples

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())[self._start :]
        self._start = 0
        return iter(indices)
