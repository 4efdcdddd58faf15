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


def alternate_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of `n` training images are mirrored in `epoch` under alternating ("derandomised")
    flips (airbench, Jordan 2024): each image's epoch-0 flip is a seeded coin, and every later
    epoch flips the opposite way, so each image is seen both ways in any two consecutive epochs."""
    first = torch.rand(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + 977)) < 0.5
    return first ^ bool(epoch % 2)


def train_steps(n: int, world_size: int, batch_size: int) -> int:
    """The number of whole batches each of `world_size` ranks gets from `n` training samples."""
    return n // world_size // batch_size


def shard_indices(
    n: int, seed: int, epoch: int, rank: int, world_size: int, batch_size: int, train: bool
) -> torch.Tensor:
    """The sample indices rank `rank` of `world_size` takes in `epoch`, in order.

    Training: the epoch's seeded permutation of range(n), every world_size-th entry from `rank`,
    cut to whole batches so that every rank runs the same number of steps (a ValueError when that
    is no batch at all). Evaluation: range(n)[rank::world_size], every sample on exactly one rank.
    The in-memory loader and the image-folder sampler both take their order from here.
    """
    if not train:
        return torch.arange(n)[rank::world_size]
    per_rank = train_steps(n, world_size, batch_size) * batch_size
    if per_rank == 0:
        raise ValueError(
            f"{n} training images are too few for a batch of {batch_size} on each of {world_size} processes"
        )
    return epoch_permutation(n, seed, epoch)[rank::world_size][:per_rank]


class InMemoryLoader:
    """Iterates (uint8 images, int64 labels) batches from tensors already on the device."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        flip_alternate: bool = False,
    ):
        if len(images) != len(labels):
            raise ValueError("images and labels differ in length")
        self.images, self.labels = images, labels
        self.batch_size, self.train = batch_size, train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.flip_alternate = flip_alternate and train  # training batches come mirrored by alternate_flips
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        return shard_indices(
            len(self.labels), self.seed, self.epoch, self.rank, self.world_size, self.batch_size, self.train
        )

    def __len__(self) -> int:
        if self.train:
            return train_steps(len(self.labels), self.world_size, self.batch_size)
        return (len(self.indices()) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        return self.iterate()

    def iterate(self, start_batch: int = 0):
        idx = self.indices().to(self.images.device)
        if self.flip_alternate:
            flips = alternate_flips(len(self.labels), self.seed, self.epoch).to(self.images.device)
        for s in range(start_batch * self.batch_size, len(idx), self.batch_size):
            b = idx[s : s + self.batch_size]
            x = self.images.index_select(0, b)
            if self.flip_alternate:
                x = torch.where(flips.index_select(0, b).view(-1, 1, 1, 1), x.flip(3), x)
            yield x, self.labels.index_select(0, b)
