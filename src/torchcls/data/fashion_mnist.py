"""Fashion-MNIST from the four official idx files, zero-padded to 32x32 with one channel.

The files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``, each gzip-compressed or not) are looked for in ``data_dir`` (and its
``fashion-mnist/`` and torchvision-style ``FashionMNIST/raw/`` subfolders) when given, then in
the Debian/Ubuntu package ``dataset-fashion-mnist``'s folder ``/usr/share/datasets/fashion-mnist``.
Images are padded 28x28 -> 32x32 (2 zero pixels each side), so every CIFAR model runs unchanged.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .base import ArrayDataset
from .stats import DATASETS

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# the idx files hold label numbers only; the names, index = label
CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
PAD = 2
_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08


def parse_idx(data: bytes, ndim: int, source: str) -> np.ndarray:
    """A uint8 idx array (magic 0x00 0x00 0x08 ndim, then ndim big-endian uint32 sizes, then data);
    the header and the payload length are checked exactly."""
    if len(data) < 4:
        raise UserError(f"{source}: too short for an idx file ({len(data)} bytes); the file is corrupt")
    if data[0] != 0 or data[1] != 0 or data[2] != _UBYTE or data[3] != ndim:
        raise UserError(
            f"{source}: bad idx magic number 0x{data[:4].hex()} (expected 0x0000080{ndim}: unsigned bytes, "
            f"{ndim} dimension{'s' if ndim > 1 else ''}); not the official Fashion-MNIST file"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{source}: truncated idx header; the file is corrupt")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise UserError(
            f"{source}: header says {'x'.join(map(str, dims))} = {expected} bytes of data but the file holds "
            f"{len(data) - header}; the file is corrupt or truncated"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _search_dirs(data_dir: Path | None) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs += [data_dir, data_dir / "fashion-mnist", data_dir / "FashionMNIST" / "raw"]
    dirs.append(SYSTEM_DIR)
    return dirs


def _find(stem: str, dirs: list[Path]) -> Path | None:
    for d in dirs:
        for name in (stem, stem + ".gz"):
            p = d / name
            if p.is_file():
                return p
    return None


def _read(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip, whatever the name says
            return gzip.decompress(raw)
        return raw
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); the file is corrupt, reinstall it") from None


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, train: bool = True) -> ArrayDataset:
    """The Fashion-MNIST train (60,000) or test (10,000) split: uint8 (N, 1, 32, 32), 10 classes."""
    dirs = _search_dirs(Path(data_dir).expanduser() if data_dir is not None else None)
    img_stem, lab_stem = _FILES[bool(train)]
    img_path, lab_path = _find(img_stem, dirs), _find(lab_stem, dirs)
    if img_path is None or lab_path is None:
        missing = [s for s, p in ((img_stem, img_path), (lab_stem, lab_path)) if p is None]
        looked = ", ".join(str(d) for d in dirs)
        raise UserError(
            f"Fashion-MNIST not found: no {' or '.join(m + '[.gz]' for m in missing)} in {looked}; "
            f"install it with `apt-get install dataset-fashion-mnist` or pass --data-dir pointing at "
            f"the folder with the four idx files"
        )
    images = parse_idx(_read(img_path), 3, str(img_path))
    labels = parse_idx(_read(lab_path), 1, str(lab_path))
    n, h, w = images.shape
    if (h, w) != (28, 28):
        raise UserError(f"{img_path}: images are {h}x{w}, Fashion-MNIST's are 28x28; not the official file")
    if labels.shape[0] != n:
        raise UserError(f"{img_path} has {n} images but {lab_path} has {labels.shape[0]} labels; mismatched files")
    if n and int(labels.max()) >= len(CLASSES):
        raise UserError(f"{lab_path}: label {int(labels.max())} out of range 0..9; not the official file")
    x = torch.zeros((n, 1, h + 2 * PAD, w + 2 * PAD), dtype=torch.uint8)
    x[:, 0, PAD : PAD + h, PAD : PAD + w] = torch.from_numpy(images.copy())
    y = torch.from_numpy(labels.astype(np.int64))
    info = DATASETS["fashion-mnist"]
    return ArrayDataset(images=x, labels=y, classes=list(CLASSES), mean=info.mean, std=info.std)
