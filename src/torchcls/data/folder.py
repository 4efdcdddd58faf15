"""ImageNet-style folders: DIR/train/<class>/*.JPEG and DIR/val/<class>/*.JPEG.

Decoding and cropping run in DataLoader worker processes (`-j/--workers`) and give uint8
(3, S, S) tensors; normalisation happens on the device, batched, in the training loop's `prepare`,
as for the in-memory data sets. The preprocessing is the original imagenet.py's:
train RandomResizedCrop(train_size) + horizontal flip, evaluation Resize(val_resize) +
CenterCrop(val_size), with ImageNet's mean and std.

The random crop and flip of a sample are a pure function of (seed, epoch, sample index): the
sampler hands the epoch to the workers with every index. So an epoch's batches are the same
whatever the number of workers or processes, a resumed run sees what an uninterrupted one would,
and N processes over a global batch see exactly the images one process would.

Grayscale, CMYK and palette images are converted to RGB. A file that cannot be decoded (truncated,
zero bytes, not an image) is dropped from its batch and named at the end of the epoch; training
goes on.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from torchcls.data.loader import shard_indices, train_steps
from torchcls.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------- scanning


@dataclass
class FolderSplit:
    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]  # (path, label)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, indices) -> FolderSplit:
        return FolderSplit(self.root, self.classes, [self.samples[int(i)] for i in indices])


def _class_dirs(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def scan_split(root: Path, classes: list[str] | None = None) -> FolderSplit:
    """List root/<class>/<image> files. `classes` (from train/) fixes the label of each name."""
    if not root.is_dir():
        raise UserError(
            f"{root} is not a folder; an ImageNet-style --data-dir holds train/<class>/ and "
            f"val/<class>/ folders of images"
        )
    found = _class_dirs(root)
    if not found:
        raise UserError(f"{root} has no class folders; expected {root}/<class>/<image files>")
    if classes is not None and found != classes:
        only_here = sorted(set(found) - set(classes))
        only_train = sorted(set(classes) - set(found))
        raise UserError(
            f"the classes of {root} differ from those of train/: "
            + (f"only in {root.name}/: {', '.join(only_here[:5])}" if only_here else "")
            + ("; " if only_here and only_train else "")
            + (f"only in train/: {', '.join(only_train[:5])}" if only_train else "")
            + "; both folders must hold the same class folders"
        )
    classes = found
    samples = []
    for label, name in enumerate(classes):
        files = sorted(
            e.path for e in os.scandir(root / name) if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS)
        )
        if not files:
            raise UserError(
                f"class folder {root / name} holds no image files ({', '.join(IMG_EXTENSIONS)}); "
                f"remove it or add its images"
            )
        samples += [(f, label) for f in files]
    return FolderSplit(root, classes, samples)


def scan_folder(data_dir) -> tuple[FolderSplit, FolderSplit]:
    """The train and val splits of an ImageNet-style folder, with one class list."""
    if data_dir is None:
        raise UserError("--dataset imagenet needs --data-dir DIR (or --data DIR) holding train/ and val/")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UserError(f"--data-dir {root} does not exist")
    for sub in ("train", "val"):
        if not (root / sub).is_dir():
            raise UserError(
                f"{root} has no {sub}/ folder; an ImageNet-style --data-dir holds train/<class>/ "
                f"and val/<class>/ folders of images"
            )
    train = scan_split(root / "train")
    val = scan_split(root / "val", train.classes)
    return train, val


# ----------------------------------------------------------------------------- decoding


def random_resized_crop_box(
    width: int, height: int, g: torch.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params, drawing from `g`: (left, top, w, h)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=g, dtype=torch.float64).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return left, top, w, h
    in_ratio = width / height  # fallback: the central crop of the allowed aspect ratios
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def load_rgb(path: str):
    """Decode an image file to an RGB PIL image (grayscale, CMYK, palette, alpha all converted)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()  # decode now, inside the try of the caller: a truncated file fails here
    return img.convert("RGB") if img.mode != "RGB" else img


def to_uint8_tensor(img) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator a training sample's crop and flip are drawn from: a function of (seed, epoch, index)."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 10_000_019 + index) % (2**63))


def train_transform(img, size: int, g: torch.Generator, flip: bool, scale=(0.08, 1.0)):
    """torchvision's RandomResizedCrop(size, scale) (crop, then resize) and RandomHorizontalFlip on a PIL image."""
    left, top, w, h = random_resized_crop_box(img.width, img.height, g, scale)
    img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR)
    if flip and float(torch.rand(1, generator=g)) < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return img


def eval_size(w: int, h: int, resize: int) -> tuple[int, int]:
    """(width, height) after torchvision's Resize(resize): the shorter side becomes `resize`."""
    if w <= h:
        return resize, int(resize * h / w)
    return int(resize * w / h), resize


def eval_transform(img, resize: int, size: int):
    """Resize(resize) (the shorter side to `resize`) then CenterCrop(size), as torchvision does."""
    nw, nh = eval_size(*img.size, resize)
    img = img.resize((nw, nh), Image.BILINEAR)
    if nw < size or nh < size:  # CenterCrop pads a too-small image with zeros
        canvas = Image.new("RGB", (max(nw, size), max(nh, size)))
        canvas.paste(img, ((max(nw, size) - nw) // 2, (max(nh, size) - nh) // 2))
        img, (nw, nh) = canvas, canvas.size
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


class FolderDataset(Dataset):
    """Items are (uint8 (3, S, S) tensor or None when unreadable, label, path).

    Indexed by (index, epoch) pairs (what `ShardedSampler` yields) so that the random crop of a
    sample depends only on (seed, epoch, index); a plain int index means epoch 0.
    """

    def __init__(self, split: FolderSplit, train: bool, size: int, resize: int = 256, flip: bool = True, seed: int = 0,
                 scale=(0.08, 1.0)):  # fmt: skip
        self.samples = split.samples
        self.train, self.size, self.resize, self.flip, self.seed = train, size, resize, flip, seed
        self.scale = tuple(scale)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        path, label = self.samples[i]
        try:
            img = load_rgb(path)
            if self.train:
                img = train_transform(img, self.size, sample_generator(self.seed, epoch, i), self.flip, self.scale)
            else:
                img = eval_transform(img, self.resize, self.size)
            return to_uint8_tensor(img), label, path
        except Exception:
            return None, label, path


def collate_skipping(items):
    """Stack the readable items; return (images, labels, paths of the unreadable ones)."""
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [p for x, _, p in items if x is None]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good], dtype=torch.int64), bad


# ----------------------------------------------------------------------------- sampling and loading


class ShardedSampler(Sampler):
    """This rank's share of an epoch, as (index, epoch) pairs.

    The order is `loader.shard_indices`, the in-memory loader's. Training: the epoch's seeded
    permutation, rank r taking every world-th index from r, cut to whole batches so every rank runs
    the same number of steps (as DistributedSampler(drop_last=True) with a batch sampler dropping
    the tail). Evaluation: indices[rank::world], every sample on exactly one rank, no padding.
    """

    def __init__(self, n: int, batch_size: int, train: bool, seed: int, rank: int, world_size: int):
        self.n, self.batch_size, self.train = n, batch_size, train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0
        if train and train_steps(n, world_size, batch_size) == 0:
            raise UserError(
                f"{n} training images are too few for a batch of {batch_size} on each of "
                f"{world_size} processes; lower --train-batch"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor:
        return shard_indices(self.n, self.seed, self.epoch, self.rank, self.world_size, self.batch_size, self.train)

    def num_batches(self) -> int:
        """Batches of an epoch: whole ones in training, the last one short in evaluation."""
        n = len(self.indices())
        return n // self.batch_size if self.train else (n + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        idx = self.indices()[self.start * self.batch_size :].tolist()
        return iter([(i, self.epoch) for i in idx])

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.start * self.batch_size)


class FolderLoader:
    """The loop's interface (`set_epoch`, `len`, `iterate(start_batch)`) over a folder split:
    DataLoader workers decode and crop; batches arrive as uint8 on the device."""

    def __init__(
        self,
        split: FolderSplit,
        batch_size: int,
        *,
        train: bool,
        size: int,
        resize: int,
        flip: bool,
        seed: int,
        rank: int,
        world_size: int,
        workers: int,
        device: torch.device,
        scale=(0.08, 1.0),
    ):
        self.split, self.batch_size, self.train, self.device = split, batch_size, train, device
        self.dataset = FolderDataset(split, train, size, resize, flip, seed, scale)
        self.sampler = ShardedSampler(len(split), batch_size, train, seed, rank, world_size)
        self.skipped: list[str] = []
        kw = {}
        if workers > 0:
            kw = dict(persistent_workers=True, prefetch_factor=4)
        self.loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_skipping,
            pin_memory=device.type == "cuda",
            drop_last=train,
            **kw,
        )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.skipped = []

    def __len__(self) -> int:
        return self.sampler.num_batches()

    def __iter__(self):
        return self.iterate()

    def take_skipped(self) -> list[str]:
        """The files this rank could not read since the last call (or set_epoch)."""
        out, self.skipped = self.skipped, []
        return out

    def iterate(self, start_batch: int = 0):
        self.sampler.start = start_batch
        try:
            for x, y, bad in self.loader:
                self.skipped += bad
                if y.numel() == 0:
                    raise UserError(
                        f"every image of a batch was unreadable ({', '.join(bad[:3])}, ...); "
                        f"check the data folder {self.split.root}"
                    )
                yield (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
        finally:
            self.sampler.start = 0
