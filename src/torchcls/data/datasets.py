"""The data sets torchcls knows by name: their names and aliases, and one loader entry point.

What is known about each in-memory data set (title, classes, mean/std) is the one table
`DATASETS` of data/stats.py, re-exported here; ImageNet-style folders are read by data/folder.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import UserError
from .base import ArrayDataset
from .cifar import load_cifar
from .fashion_mnist import load_fashion_mnist
from .stats import DATASETS, DatasetInfo


def _cifar(name: str) -> Callable[..., ArrayDataset]:
    def load(data_dir, train, download=False):
        return load_cifar(name, data_dir, train, download=download)

    return load


def _fashion(data_dir, train, download=False):
    # not downloadable here: it comes with the system package dataset-fashion-mnist
    return load_fashion_mnist(data_dir, train)


# name -> loader(data_dir, train, download) for every entry of DATASETS
_LOADERS: dict[str, Callable[..., ArrayDataset]] = {
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "fashion-mnist": _fashion,
}
ALIASES = {
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "cifar-100": "cifar100",
    "cifar_100": "cifar100",
    "fashionmnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
}
# ImageNet-style folders (--data-dir DIR with train/<class>/ and val/<class>/), read by data/folder.py
# through DataLoader workers instead of being held in memory
FOLDER_DATASETS = {"imagenet"}
FOLDER_ALIASES = {"imagefolder": "imagenet", "image-folder": "imagenet", "folder": "imagenet"}


def is_folder_dataset(name: str) -> bool:
    key = str(name).strip().lower()
    return FOLDER_ALIASES.get(key, key) in FOLDER_DATASETS


def canonical_name(name: str) -> str:
    """The table's name for `name` (case-insensitive, aliases allowed); UserError when unknown."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, FOLDER_ALIASES.get(key, key))
    if key not in DATASETS and key not in FOLDER_DATASETS:
        raise UserError(
            f"unknown data set {name!r}; choose one of {', '.join([*DATASETS, *sorted(FOLDER_DATASETS)])} "
            f"(aliases: {', '.join(sorted([*ALIASES, *FOLDER_ALIASES]))})"
        )
    return key


def get_info(name: str) -> DatasetInfo:
    key = canonical_name(name)
    if key in FOLDER_DATASETS:
        raise UserError(f"{name} is an image-folder data set: its classes and size come from --data-dir")
    return DATASETS[key]


def num_classes(name: str) -> int:
    return get_info(name).num_classes


def load_dataset(name: str, data_dir: str | os.PathLike | None, train: bool, download: bool = False) -> ArrayDataset:
    """Load the train or test split of data set `name` as an in-memory ArrayDataset."""
    return _LOADERS[get_info(name).name](data_dir, train, download=download)
