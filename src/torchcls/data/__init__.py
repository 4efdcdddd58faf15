"""Data: in-memory data sets (CIFAR-10/100, Fashion-MNIST) and batched augmentation on the device."""
from .augment import BatchAugment, cutout, normalize, random_crop, random_flip
from .base import ArrayDataset
from .cifar import load_cifar
from .datasets import DATASETS, DatasetInfo, canonical_name, get_info, load_dataset, num_classes
from .fashion_mnist import load_fashion_mnist
from .stats import STATS, compute_mean_std

__all__ = [
    "ArrayDataset", "BatchAugment", "DATASETS", "DatasetInfo", "STATS", "canonical_name", "compute_mean_std",
    "cutout", "get_info", "load_cifar", "load_dataset", "load_fashion_mnist", "normalize", "num_classes",
    "random_crop", "random_flip",
]
