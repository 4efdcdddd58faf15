"""In-memory batches: this rank's share, this epoch's order, no worker processes.

The order of an epoch is a pure function of (seed, epoch), so a resumed run sees exactly the
batches an uninterrupted one would, and every rank agrees on the permutation before taking its
share. Training drops the ragged tail so that every rank runs the same number of steps; evaluation
gives every sample to exactly one rank (nothing counted twice or dropped).
"""
from __future__ import annotations

import torch


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class InMemoryLoader:
    """Iterates (uint8 images, int64 labels) batches from tensors already on the device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, train: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1):
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images, self.labels = images, labels
        self.batch_size, self.train = batch_size, train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.train:
            return torch.arange(n)[self.rank::self.world_size]
        perm = epoch_permutation(n, self.seed, self.epoch)
        per_rank = (n // self.world_size // self.batch_size) * self.batch_size
        if per_rank == 0:
            raise ValueError(f"{n} training images are too few for a batch of {self.batch_size} "
                             f"on each of {self.world_size} processes")
        return perm[self.rank::self.world_size][:per_rank]

    def __len__(self) -> int:
        n = len(self.indices()) if not self.train else (len(self.labels) // self.world_size // self.batch_size)
        return n if self.train else (n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        return self.iterate()

    def iterate(self, start_batch: int = 0):
        idx = self.indices().to(self.images.device)
        for s in range(start_batch * self.batch_size, len(idx), self.batch_size):
            b = idx[s:s + self.batch_size]
            yield self.images.index_select(0, b), self.labels.index_select(0, b)
