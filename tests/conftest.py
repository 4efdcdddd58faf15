"""Fixtures shared by the test files."""

import os
import tarfile

import pytest
import torch

from tests._data import WOOF_TAR

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the commands the tests start, too
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def woof(tmp_path_factory):
    """The real imagewoof-mini folder (train/ and val/), unpacked once from $TORCHCLS_DATA."""
    if not WOOF_TAR.is_file():
        pytest.skip(f"{WOOF_TAR} not found (set TORCHCLS_DATA to the folder holding imagewoof-mini.tar)")
    root = tmp_path_factory.mktemp("woof")
    with tarfile.open(WOOF_TAR) as t:
        t.extractall(root, filter="data")
    return root / "imagewoof-mini"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Image stores and decoded archives made by the tests go to a temporary cache folder, never the
    user's ~/.cache; one folder for all pytest-xdist workers of a run (the folder above each worker's
    own), so CIFAR-10's archive decoded by one worker is read back by the other (cache files are
    written atomically: two workers that miss it at the same moment both decode it, and both
    writes are whole)."""
    old = os.environ.get("TORCHCLS_CACHE")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "shared-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("cache")
    os.environ["TORCHCLS_CACHE"] = str(cache)
    yield
    if old is None:
        os.environ.pop("TORCHCLS_CACHE", None)
    else:
        os.environ["TORCHCLS_CACHE"] = old
