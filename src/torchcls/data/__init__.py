"""Data: in-memory data sets (CIFAR-10/100, Fashion-MNIST) and batched augmentation on the device."""

from .augment import BatchAugment, cutout, random_crop, random_flip
from .base import ArrayDataset
from .cifar import load_cifar
from .datasets import canonical_name, get_info, is_folder_dataset, load_dataset, num_classes
from .fashion_mnist import load_fashion_mnist
from .stats import DATASETS, DatasetInfo, compute_mean_std

__all__ = [
    "ArrayDataset",
    "BatchAugment",
    "DATASETS",
    "DatasetInfo",
    "canonical_name",
    "compute_mean_std",
    "cutout",
    "get_info",
    "is_folder_dataset",
    "load_cifar",
    "load_dataset",
    "load_fashion_mnist",
    "num_classes",
    "random_crop",
    "random_flip",
]
