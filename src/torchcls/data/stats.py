"""The one table of what torchcls knows about each in-memory data set: `DATASETS`, name -> title,
class count and the normalisation constants of its TRAINING split.

The loaders (cifar.py, fashion_mnist.py) and the name look-ups (datasets.py) read it; how each
data set's files are laid out stays with its loader. It is a leaf module so that they all can.

mean and std are per channel in [0, 1] units; std is the standard deviation over all pixels of
the channel across the whole training set (not the mean of per-image stds, a common mistake that
gives e.g. 0.2023/0.1994/0.2010 for CIFAR-10). tests/test_data.py recomputes the CIFAR-10 and
Fashion-MNIST values from the real files with `compute_mean_std` and checks them to 1e-3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# CIFAR-10 training set (50,000 images); recomputed from the official archive in the tests.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# CIFAR-100 training set (50,000 images): the widely published values, computed the same way.
# CIFAR-100 is not on this machine, so these are not recomputed by the tests; they can be
# checked with `compute_mean_std(load_cifar("cifar100", DIR, train=True).images)`.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# Fashion-MNIST training set (60,000 images) as stored by torchcls: zero-padded from 28x28 to
# 32x32 (2 pixels each side), so the padding lowers the mean and changes the std compared with
# the 28x28 figures (0.2860 / 0.3530). Computed from the official idx files (exact values
# 0.218999832 / 0.331811373).
FASHION_MNIST_MEAN = (0.2190,)
FASHION_MNIST_STD = (0.3318,)


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # the canonical name (--dataset)
    title: str  # as written in messages
    num_classes: int
    mean: tuple[float, ...]  # per channel as stored (1 for Fashion-MNIST; normalize() repeats it to 3)
    std: tuple[float, ...]


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", "CIFAR-10", 10, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": DatasetInfo("cifar100", "CIFAR-100", 100, CIFAR100_MEAN, CIFAR100_STD),
    "fashion-mnist": DatasetInfo("fashion-mnist", "Fashion-MNIST", 10, FASHION_MNIST_MEAN, FASHION_MNIST_STD),
}


def compute_mean_std(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std, in [0, 1] units, of uint8 images (N, C, H, W).

    Exact: a 256-bin histogram per channel gives the integer sum and sum of squares, then
    std = sqrt(E[x^2] - E[x]^2) over all pixels of the channel (population std, the same for
    every pixel of every image), with no float rounding until the last division.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("no images")
    values = torch.arange(256, dtype=torch.int64)
    count = n * h * w
    mean, std = [], []
    for ch in range(c):
        hist = torch.bincount(images[:, ch].reshape(-1).cpu(), minlength=256).to(torch.int64)
        total, total_sq = int((hist * values).sum()), int((hist * values * values).sum())
        var = (total_sq * count - total * total) / (count * count)  # exact integers until here
        mean.append(total / count / 255.0)
        std.append(math.sqrt(var) / 255.0)
    return tuple(mean), tuple(std)
