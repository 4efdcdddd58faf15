"""Where the tests find real data, and the skip markers for when it is absent."""

import os
from pathlib import Path

import pytest
from PIL import Image

FMNIST = Path("/usr/share/datasets/fashion-mnist")
DATA = Path(os.environ.get("TORCHCLS_DATA", "../shared/data"))
CIFAR_ARCHIVE = DATA / "cifar-10-batches-py.tar.xz"
WOOF_TAR = DATA / "imagewoof-mini.tar"
# a quiet, deterministic, single-threaded run: the flags every tiny CLI run in the tests shares
QUIET_RUN = "--threads 1 --amp off --seed 0 --tensorboard off --plot off --lr 0.01".split()

needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_dir(), reason="Fashion-MNIST system package (apt-get install dataset-fashion-mnist) is not installed"
)
needs_cifar = pytest.mark.skipif(
    not CIFAR_ARCHIVE.is_file(),
    reason=f"{CIFAR_ARCHIVE} not found (set TORCHCLS_DATA to the folder holding cifar-10-batches-py.tar.xz)",
)
needs_woof = pytest.mark.skipif(
    not WOOF_TAR.is_file(), reason=f"{WOOF_TAR} not found (set TORCHCLS_DATA to the folder holding imagewoof-mini.tar)"
)


def write_png_tree(dataset, root: Path, n: int) -> Path:
    """The first `n` images of an in-memory RGB data set as PNG files in class folders
    (root/<class>/<index>.png, index = the image's place in the data set): a labelled tree."""
    for i in range(n):
        d = root / dataset.classes[int(dataset.labels[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(dataset.images[i].permute(1, 2, 0).numpy()).save(d / f"{i:05d}.png")
    return root
