"""From a run's config to its batches: the one place that knows which kind of data set a run uses.

Every kind yields the same thing to the training loop: loaders with `set_epoch(e)`, `len()` and
`iterate(start_batch)` giving (images, labels) batches on the device, and a batched `augment`
applied there. In-memory data sets (CIFAR, Fashion-MNIST) are uint8 tensors on the device; image
folders (--dataset imagenet) are decoded once into a store (data/store.py) and cropped to uint8 per
sample from it (or, with --store off, decoded every epoch by DataLoader workers: data/folder.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from torchcls.data.augment import BatchAugment
from torchcls.data.datasets import is_folder_dataset, load_dataset
from torchcls.data.folder import IMAGENET_MEAN, IMAGENET_STD, FolderLoader, scan_folder
from torchcls.data.loader import InMemoryLoader
from torchcls.data.store import StoreLoader, resolve_store
from torchcls.errors import UserError


@dataclass
class RunData:
    train: Any
    select: Any  # the split "best" is chosen on: the held-out validation images, else the test set
    select_name: str  # "val" or "test"
    test: Any | None  # the test split when it is not `select`
    classes: list[str]
    mean: tuple
    std: tuple
    input_size: int
    train_size: int
    select_size: int
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    train_input_size: int = 0  # the training batches' image size when it differs from input_size (0: same)


def split_validation(train, val_split: int, seed: int):
    """Hold out `val_split` training images (a fixed, seeded choice) for model selection."""
    if val_split <= 0:
        return train, None
    if val_split >= len(train):
        raise UserError(f"--val-split {val_split} leaves no training images (the set has {len(train)})")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(perm[val_split:]), train.subset(perm[:val_split])


def build_data(cfg, seed: int, rank: int, world_size: int, device: torch.device, log=print) -> RunData:
    if cfg.train_batch % world_size:
        raise UserError(
            f"--train-batch {cfg.train_batch} (the global batch) must be divisible by the "
            f"number of processes ({world_size})"
        )
    local_batch = cfg.train_batch // world_size
    if is_folder_dataset(cfg.dataset):
        return build_folder_data(cfg, seed, rank, world_size, device, local_batch, log)
    data_dir = cfg.data_dir  # None: $TORCHCLS_DATA, then ./data (and the system Fashion-MNIST)
    train = load_dataset(cfg.dataset, data_dir, train=True, download=cfg.download)
    test = load_dataset(cfg.dataset, data_dir, train=False, download=False)
    if cfg.test_subset:
        test = test.subset(torch.arange(min(cfg.test_subset, len(test))))
    train, val = split_validation(train, cfg.val_split, seed)
    if cfg.train_subset:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))
        train = train.subset(pick[: cfg.train_subset])

    def loader(ds, batch, is_train):
        return InMemoryLoader(
            ds.images.to(device),
            ds.labels.to(device),
            batch,
            train=is_train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            flip_alternate=cfg.flip_alternate,
        )

    if cfg.train_crop:  # train on random windows, evaluate on the central one
        test = test.center_crop(cfg.train_crop)
        val = val.center_crop(cfg.train_crop) if val is not None else None
    select, select_name = (val, "val") if val is not None else (test, "test")
    return RunData(
        train=loader(train, local_batch, True),
        select=loader(select, cfg.test_batch, False),
        select_name=select_name,
        test=loader(test, cfg.test_batch, False) if val is not None else None,
        classes=list(train.classes),
        mean=tuple(train.mean),
        std=tuple(train.std),
        input_size=int(select.images.shape[-1]),
        train_size=len(train),
        select_size=len(select),
        augment=BatchAugment(  # with alternating flips the loader has mirrored the images already
            crop_padding=cfg.crop_padding,
            flip=cfg.flip and not cfg.flip_alternate,
            cutout=cfg.cutout,
            crop_size=cfg.train_crop,
        ),
    )


def store_max_size(cfg) -> int:
    """The shorter side of a run's stored images: --store-max-size, else the larger of the
    evaluation resize and the training crop."""
    return cfg.store_max_size or max(cfg.val_resize, cfg.train_size)


def build_folder_data(
    cfg, seed: int, rank: int, world_size: int, device: torch.device, local_batch: int, log=print
) -> RunData:
    """An ImageNet-style folder, read from its decoded store (data/store.py; `--store off`: worker
    processes decode the files every epoch), cropped and flipped to uint8 per sample; the device
    normalises. val/ is the split the best model is chosen on; there is no separate test split."""
    if cfg.val_split:
        raise UserError("--val-split is for in-memory data sets; an image folder's val/ is its validation set")
    if cfg.store == "off":
        train, val = scan_folder(cfg.data_dir)
        make, extra = FolderLoader, dict(workers=cfg.workers)
    else:

        def wait():
            if tdist.is_available() and tdist.is_initialized():
                tdist.barrier()

        _, _, splits = resolve_store(
            cfg.data_dir, cfg.store, store_max_size(cfg), cfg.workers, log=log, is_main=rank == 0, wait=wait
        )
        train, val = splits["train"], splits["val"]
        make, extra = StoreLoader, {}
    if cfg.train_subset:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))
        train = train.subset(pick[: cfg.train_subset].tolist())
    if cfg.test_subset:
        val = val.subset(range(min(cfg.test_subset, len(val))))
    common = dict(
        seed=seed,
        rank=rank,
        world_size=world_size,
        device=device,
        resize=cfg.val_resize,
        flip=cfg.flip,
        scale=tuple(cfg.crop_scale),
        **extra,
    )
    return RunData(
        train=make(train, local_batch, train=True, size=cfg.train_size, **common),
        select=make(val, cfg.test_batch, train=False, size=cfg.val_size, **common),
        select_name="val",
        test=None,
        classes=list(train.classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=cfg.val_size,
        train_size=len(train),
        select_size=len(val),
        # crop and flip happened in the workers, per sample; only cutout (if asked) is left for the device
        augment=BatchAugment(crop_padding=0, flip=False, cutout=cfg.cutout),
        train_input_size=cfg.train_size,
    )
