"""The in-memory data set every loader returns: one uint8 image tensor and one label tensor."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ArrayDataset:
    """A whole data set held in memory.

    images: uint8 (N, C, H, W); C is 3 for CIFAR, 1 for Fashion-MNIST.
    labels: int64 (N,), each in [0, len(classes)).
    classes: the class names, index = label.
    mean, std: per channel, in [0, 1] units, of the training images as stored (the constants
        to normalise with; the test split carries the training set's values).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")
        c = self.images.shape[1]
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean/std need {c} values (one a channel), got {self.mean} / {self.std}")
        self.classes = list(self.classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices) -> ArrayDataset:
        """The samples at `indices` (a sequence, range, slice or index tensor), same classes and stats."""
        if isinstance(indices, slice):
            idx = torch.arange(len(self))[indices]
        else:
            idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return ArrayDataset(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=list(self.classes),
            mean=self.mean,
            std=self.std,
        )

    def center_crop(self, size: int) -> ArrayDataset:
        """The central size x size window of every image (the identity when size is the full size)."""
        h, w = self.image_size
        if size <= 0 or (size, size) == (h, w):
            return self
        if size > min(h, w):
            raise ValueError(f"cannot crop {h}x{w} images to {size}x{size}")
        top, left = (h - size) // 2, (w - size) // 2
        return ArrayDataset(
            self.images[:, :, top : top + size, left : left + size].contiguous(),
            self.labels,
            list(self.classes),
            self.mean,
            self.std,
        )

    def __repr__(self) -> str:
        n, c, h, w = self.images.shape
        return f"ArrayDataset(n={n}, channels={c}, size={h}x{w}, classes={len(self.classes)})"
