"""Data: real CIFAR-10 / Fashion-MNIST, the official file layouts written small, the restricted
unpickler against malicious pickles, idx parsing, and batched augmentation."""

from __future__ import annotations

import builtins
import gzip
import os
import pickle
import shlex
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.utils as tvu
from torchvision.datasets import CIFAR10

from torchcls.data import (
    DATASETS,
    ArrayDataset,
    BatchAugment,
    compute_mean_std,
    cutout,
    get_info,
    load_cifar,
    load_dataset,
    load_fashion_mnist,
    num_classes,
    random_crop,
    random_flip,
)
from torchcls.data import cifar as cifar_mod
from torchcls.data import fashion_mnist as fm_mod
from torchcls.data.augment import shift_crop
from torchcls.data.folder import ShardedSampler
from torchcls.data.loader import InMemoryLoader, epoch_permutation, shard_indices
from torchcls.engine.step import normalize
from torchcls.errors import UserError


def stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of data set `name` from the data-set table."""
    return DATASETS[name].mean, DATASETS[name].std


# --------------------------------------------------------------------------- writing the official layouts


def _dump(obj, path: Path, protocol: int = 2, official_globals: bool = False) -> None:
    data = pickle.dumps(obj, protocol=protocol)
    if official_globals:
        # the official files (Python 2, numpy 1.x) name numpy.core.multiarray._reconstruct
        new = b"cnumpy.core.multiarray\n_reconstruct\n"
        old = b"cnumpy._core.multiarray\n_reconstruct\n"
        if old in data:
            data = data.replace(old, new)
        assert new in data
    path.write_bytes(data)


def _images(rng, n):
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar100(root: Path, n_train=12, n_test=6, protocol=2, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = _images(rng, n)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        fine[0] = 99
        batch = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{split}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [v // 5 for v in fine],
            b"data": data,
        }
        _dump(batch, folder / split, protocol)
        out[split] = (data, fine)
    names = [f"class_{i:02d}" for i in range(100)]
    _dump(
        {
            b"fine_label_names": [n.encode() for n in names],
            b"coarse_label_names": [f"super_{i}".encode() for i in range(20)],
        },
        folder / "meta",
        protocol,
    )
    out["names"] = names
    out["folder"] = folder
    return out


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch=4, n_test=5, seed=1) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        data, labels = _images(rng, per_batch), [int(v) for v in rng.integers(0, 10, size=per_batch)]
        _dump(
            {
                b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [b"x.png"] * per_batch,
            },
            folder / f"data_batch_{i}",
            official_globals=True,
        )
        train_x.append(data)
        train_y += labels
    test_x, test_y = _images(rng, n_test), [int(v) for v in rng.integers(0, 10, size=n_test)]
    _dump(
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": test_y,
            b"data": test_x,
            b"filenames": [b"x.png"] * n_test,
        },
        folder / "test_batch",
        official_globals=True,
    )
    _dump(
        {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072},
        folder / "batches.meta",
    )
    return {"folder": folder, "train": (np.concatenate(train_x), train_y), "test": (test_x, test_y)}


def make_tar(folder: Path, archive: Path) -> Path:
    mode = {".gz": "w:gz", ".xz": "w:xz", ".tar": "w"}[archive.suffix]
    with tarfile.open(archive, mode) as tf:
        tf.add(folder, arcname=folder.name)
    return archive


def check(ds: ArrayDataset, data: np.ndarray, labels, classes):
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(labels), 3, 32, 32)
    assert torch.equal(ds.images, torch.from_numpy(data.reshape(-1, 3, 32, 32)))
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == list(labels)
    assert ds.classes == classes


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    """Keep every cache this test writes in its own tmp folder."""
    monkeypatch.setenv("TORCHCLS_CACHE", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- CIFAR-100 / CIFAR-10 small files


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar100_folder_and_archive(tmp_path, protocol):
    w = write_cifar100(tmp_path / "d", protocol=protocol)
    arch_dir = tmp_path / "a"
    arch_dir.mkdir()
    make_tar(w["folder"], arch_dir / "cifar-100-python.tar.gz")
    for data_dir in (tmp_path / "d", w["folder"], arch_dir, arch_dir / "cifar-100-python.tar.gz"):
        for train, split in ((True, "train"), (False, "test")):
            ds = load_cifar("cifar100", data_dir, train)
            check(ds, *w[split], w["names"])
            assert (ds.mean, ds.std) == stats("cifar100")
    assert load_dataset("cifar100", arch_dir, False).num_classes == 100


def test_cifar10_official_globals_folder_and_xz(tmp_path):
    w = write_cifar10(tmp_path / "d")
    make_tar(w["folder"], tmp_path / "cifar-10-batches-py.tar.xz")
    (tmp_path / "d2").mkdir()
    make_tar(w["folder"], tmp_path / "d2" / "cifar-10-python.tar.gz")
    for data_dir in (tmp_path / "d", w["folder"], tmp_path, tmp_path / "d2"):
        if data_dir == tmp_path:  # only the .tar.xz is directly in tmp_path (d/ holds the folder)
            assert cifar_mod.locate(cifar_mod.SPECS["cifar10"], data_dir).name == "cifar-10-batches-py.tar.xz"
        tr, te = load_cifar("cifar10", data_dir, True), load_cifar("cifar10", data_dir, False)
        check(tr, *w["train"], CIFAR10_NAMES)
        check(te, *w["test"], CIFAR10_NAMES)
        assert (tr.mean, tr.std) == stats("cifar10")


def test_archive_cache_written_reused_and_keyed(tmp_path, monkeypatch):
    w = write_cifar10(tmp_path / "d")
    (tmp_path / "a").mkdir()
    arch = make_tar(w["folder"], tmp_path / "a" / "cifar-10-batches-py.tar.xz")
    first = load_cifar("cifar10", arch, True)
    cached = sorted((tmp_path / "cache").glob("cifar10-*.npz"))
    assert len(cached) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    # with the archive unreadable, both splits must come from the cache
    real_read = cifar_mod._read_archive
    monkeypatch.setattr(cifar_mod, "_read_archive", lambda *a: pytest.fail("archive read despite cache"))
    again, test = load_cifar("cifar10", arch, True), load_cifar("cifar10", arch, False)
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert again.classes == CIFAR10_NAMES
    check(test, *w["test"], CIFAR10_NAMES)
    monkeypatch.setattr(cifar_mod, "_read_archive", real_read)
    # a changed archive (new mtime) gets a new cache entry
    st = arch.stat()
    os.utime(arch, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_cifar("cifar10", arch, True)
    assert len(list((tmp_path / "cache").glob("cifar10-*.npz"))) == 2
    # a corrupt cache file is ignored, not trusted
    for p in (tmp_path / "cache").glob("*.npz"):
        p.write_bytes(b"garbage")
    check(load_cifar("cifar10", arch, True), *w["train"], CIFAR10_NAMES)
    # cache off: nothing written
    monkeypatch.setenv("TORCHCLS_CACHE", "off")
    for p in (tmp_path / "cache").glob("*.npz"):
        p.unlink()
    check(load_cifar("cifar10", arch, False), *w["test"], CIFAR10_NAMES)
    assert not list((tmp_path / "cache").glob("*.npz"))


# --------------------------------------------------------------------------- malicious and corrupt files


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path):
    return {
        "os.system": _Payload(os.system, f"touch {shlex.quote(str(marker))}"),
        "builtins.exec": _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.open": _Payload(builtins.open, str(marker), "w"),
    }


def test_payload_is_live(tmp_path):
    """The open() payload really creates its file under plain pickle (so the next test can fail)."""
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_payloads(live)["builtins.open"], protocol=2)).close()
    assert live.exists()


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.open"])
@pytest.mark.parametrize("form", ["folder", "archive"])
def test_malicious_pickle_refused(tmp_path, kind, form):
    marker = tmp_path / "pwned"
    w = write_cifar10(tmp_path / "d")
    evil = {b"labels": [0], b"data": _payloads(marker)[kind], b"batch_label": b"x"}
    _dump(evil, w["folder"] / "data_batch_3")
    where = w["folder"] if form == "folder" else make_tar(w["folder"], tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(UserError) as e:
        load_cifar("cifar10", where, True)
    msg = str(e.value)
    assert "data_batch_3" in msg and "refused" in msg
    assert kind.split(".")[1] in msg  # names the forbidden global (os.system pickles as posix.system)
    assert "\n" not in msg
    assert not marker.exists()


def test_corrupt_files(tmp_path):
    w = write_cifar10(tmp_path / "d")
    f = w["folder"] / "data_batch_2"
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="data_batch_2.*corrupt or truncated"):
        load_cifar("cifar10", w["folder"], True)
    bad = {b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)}
    _dump(bad, f)
    with pytest.raises(UserError, match=r"uint8 N x 3072"):
        load_cifar("cifar10", w["folder"], True)
    _dump({b"labels": [0, 10], b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(UserError, match=r"labels must be in \[0, 10\)"):
        load_cifar("cifar10", w["folder"], True)
    _dump({b"labels": [0], b"data": np.zeros((2, 3072), np.uint8)}, f)
    with pytest.raises(UserError, match="2 images but 1 labels"):
        load_cifar("cifar10", w["folder"], True)
    _dump([1, 2, 3], f)
    with pytest.raises(UserError, match="expected a dict"):
        load_cifar("cifar10", w["folder"], True)
    f.write_bytes(good)
    (w["folder"] / "batches.meta").unlink()
    (w["folder"] / "test_batch").unlink()
    with pytest.raises(UserError, match="test_batch is missing"):
        load_cifar("cifar10", w["folder"], False)
    # archives: not a tar, truncated xz, tar without the files
    a = tmp_path / "cifar-10-python.tar.gz"
    a.write_bytes(b"this is not an archive")
    with pytest.raises(UserError, match="cannot read the archive"):
        load_cifar("cifar10", a, True)
    w2 = write_cifar10(tmp_path / "e")
    x = make_tar(w2["folder"], tmp_path / "e" / "cifar-10-batches-py.tar.xz")
    x.write_bytes(x.read_bytes()[:-4000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_cifar("cifar10", x, True)
    other = tmp_path / "other"
    (other / "stuff").mkdir(parents=True)
    (other / "stuff" / "readme").write_text("hi")
    (tmp_path / "o").mkdir()
    t = make_tar(other / "stuff", tmp_path / "o" / "cifar-10-python.tar.gz")
    with pytest.raises(UserError, match="lacks data_batch_1"):
        load_cifar("cifar10", t, True)


def test_missing_cifar_message(tmp_path):
    where = tmp_path / "nothing-here"
    with pytest.raises(UserError) as e:
        load_cifar("cifar10", where, True)
    msg = str(e.value)
    for name in ("cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar-10-batches-py.tar.xz"):
        assert str(where / name) in msg
    assert "--download" in msg and "--data-dir" in msg and "\n" not in msg
    with pytest.raises(UserError, match="cifar-100-python.tar.gz"):
        load_dataset("CIFAR-100", where, False)


def test_download_fetches_the_official_archive(tmp_path, monkeypatch):
    w = write_cifar10(tmp_path / "src")
    tiny = make_tar(w["folder"], tmp_path / "src" / "tiny.tar.gz")
    calls = []

    def fake_download(url, root, filename=None, md5=None, **kw):
        calls.append((url, filename, md5))
        Path(root, filename).write_bytes(tiny.read_bytes())

    monkeypatch.setattr(tvu, "download_url", fake_download)
    dest = tmp_path / "dl"
    check(load_cifar("cifar10", dest, True, download=True), *w["train"], CIFAR10_NAMES)
    assert calls == [(CIFAR10.url, "cifar-10-python.tar.gz", CIFAR10.tgz_md5)]
    assert (dest / "cifar-10-python.tar.gz").is_file() and not (dest / "cifar-10-batches-py").exists()
    load_cifar("cifar10", dest, False, download=True)  # already there: no second download
    assert len(calls) == 1

    def failing(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvu, "download_url", failing)
    with pytest.raises(UserError, match="could not download CIFAR-10.*network unreachable.*--data-dir"):
        load_cifar("cifar10", tmp_path / "dl2", True, download=True)


def test_dataset_table():
    assert num_classes("cifar10") == 10 and num_classes("cifar100") == 100
    assert num_classes("fmnist") == num_classes("FashionMNIST") == num_classes("fashion-mnist") == 10
    assert set(DATASETS) == {"cifar10", "cifar100", "fashion-mnist"}
    with pytest.raises(UserError) as e:
        load_dataset("imagenet22k", None, True)
    assert all(n in str(e.value) for n in DATASETS)
    assert get_info("CIFAR-10") is DATASETS["cifar10"] and get_info("fmnist").title == "Fashion-MNIST"
    with pytest.raises(UserError, match="image-folder"):
        get_info("imagenet")


def test_the_table_is_what_the_loaders_use():
    """Title, class count and mean/std live once, in the table; the format descriptions read it."""
    for name, spec in cifar_mod.SPECS.items():
        assert spec.info is DATASETS[name]
        assert (spec.title, spec.num_classes) == (DATASETS[name].title, DATASETS[name].num_classes)
    assert len(fm_mod.CLASSES) == DATASETS["fashion-mnist"].num_classes
    for info in DATASETS.values():
        assert len(info.mean) == len(info.std) in (1, 3)


def test_array_dataset_subset():
    ds = ArrayDataset(
        torch.arange(5 * 3 * 4, dtype=torch.uint8).view(5, 3, 2, 2),
        torch.arange(5),
        ["a"] * 5,
        (0.1, 0.2, 0.3),
        (1.0, 1.0, 1.0),
    )
    sub = ds.subset([4, 1])
    assert len(sub) == 2 and sub.labels.tolist() == [4, 1] and torch.equal(sub.images[0], ds.images[4])
    assert sub.mean == ds.mean and sub.classes == ds.classes
    assert ds.subset(slice(1, 3)).labels.tolist() == [1, 2]
    with pytest.raises(ValueError):
        ArrayDataset(torch.zeros(2, 3, 2, 2), torch.arange(2), ["a"], (0,) * 3, (1,) * 3)


def test_compute_mean_std_matches_float_reference():
    x = torch.randint(0, 256, (7, 3, 5, 6), dtype=torch.uint8)
    mean, std = compute_mean_std(x)
    f = x.double() / 255
    assert np.allclose(mean, f.mean(dim=(0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(std, f.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False).numpy(), atol=1e-12)


# --------------------------------------------------------------------------- Fashion-MNIST idx files


def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, n_train=5, n_test=3, gz=False, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n, train in (("train", n_train, True), ("t10k", n_test, False)):
        x = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n, dtype=np.uint8)
        for stem, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            raw = _idx(arr)
            (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
        out[train] = (x, y)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files(tmp_path, gz):
    w = write_idx_set(tmp_path, gz=gz)
    for train in (True, False):
        ds = load_fashion_mnist(tmp_path, train)
        x, y = w[train]
        assert ds.images.shape == (len(y), 1, 32, 32) and ds.images.dtype == torch.uint8
        assert torch.equal(ds.images[:, 0, 2:30, 2:30], torch.from_numpy(x))
        border = ds.images.clone()
        border[:, :, 2:30, 2:30] = 0
        assert int(border.sum()) == 0
        assert ds.labels.tolist() == y.tolist() and ds.classes[0] == "T-shirt/top" and len(ds.classes) == 10


def test_idx_bad_files(tmp_path, monkeypatch):
    monkeypatch.setattr(fm_mod, "SYSTEM_DIR", tmp_path / "no-system-package")
    write_idx_set(tmp_path)
    img = tmp_path / "train-images-idx3-ubyte"
    good = img.read_bytes()
    img.write_bytes(b"\x00\x00\x08\x01" + good[4:])  # 1-d magic for an image file
    with pytest.raises(UserError, match="bad idx magic number 0x00000801"):
        load_fashion_mnist(tmp_path, True)
    img.write_bytes(b"\x00\x00\x0d\x03" + good[4:])  # float data type
    with pytest.raises(UserError, match="bad idx magic"):
        load_fashion_mnist(tmp_path, True)
    img.write_bytes(good[:-1])
    with pytest.raises(UserError, match="truncated"):
        load_fashion_mnist(tmp_path, True)
    img.write_bytes(good)
    lab = tmp_path / "train-labels-idx1-ubyte"
    lab.write_bytes(_idx(np.array([0, 1, 2, 3, 10])))
    with pytest.raises(UserError, match="out of range"):
        load_fashion_mnist(tmp_path, True)
    lab.write_bytes(_idx(np.array([0, 1, 2])))
    with pytest.raises(UserError, match="5 images but .* 3 labels"):
        load_fashion_mnist(tmp_path, True)
    lab.unlink()
    with pytest.raises(UserError) as e:
        load_fashion_mnist(tmp_path, True)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert str(tmp_path) in msg and "train-labels-idx1-ubyte" in msg


# --------------------------------------------------------------------------- real data


def _stats_close(ds: ArrayDataset, expected):
    mean, std = compute_mean_std(ds.images)
    assert np.allclose(mean, expected[0], atol=1e-3), (mean, expected[0])
    assert np.allclose(std, expected[1], atol=1e-3), (std, expected[1])
    assert np.allclose(ds.mean, mean, atol=1e-3) and np.allclose(ds.std, std, atol=1e-3)


@pytest.fixture(scope="module")
def real_cifar10(tmp_path_factory):
    root = os.environ.get("TORCHCLS_DATA")
    if not root:
        pytest.skip("TORCHCLS_DATA is not set (point it at the folder holding cifar-10-batches-py.tar.xz)")
    if cifar_mod.locate(cifar_mod.SPECS["cifar10"], Path(root)) is None:
        pytest.skip(f"no CIFAR-10 folder or archive under TORCHCLS_DATA={root}")
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCHCLS_CACHE", str(tmp_path_factory.mktemp("cifar-cache")))
    try:
        return load_cifar("cifar10", root, True), load_cifar("cifar10", root, False)  # 2nd: from the cache
    finally:
        mp.undo()


def test_real_cifar10(real_cifar10):
    train, test = real_cifar10
    assert train.images.shape == (50_000, 3, 32, 32) and test.images.shape == (10_000, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.classes == CIFAR10_NAMES and train.num_classes == 10
    assert train.labels.bincount().tolist() == [5000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    _stats_close(train, stats("cifar10"))
    # the test split is not a copy of the training split
    assert not torch.equal(train.images[:10_000], test.images)


@pytest.mark.skipif(
    not any(fm_mod.SYSTEM_DIR.glob("train-images-idx3-ubyte*")),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    train, test = load_fashion_mnist(None, True), load_dataset("fmnist", None, False)
    assert train.images.shape == (60_000, 1, 32, 32) and test.images.shape == (10_000, 1, 32, 32)
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    assert int(train.images[:, :, :2].sum()) == 0 and int(train.images[:, :, :, 30:].sum()) == 0
    _stats_close(train, stats("fashion-mnist"))


# --------------------------------------------------------------------------- sharding


def test_shard_indices_keeps_the_exact_order():
    """Pinned values: resumed runs and N-process runs depend on this exact order."""
    assert shard_indices(50, 1, 5, 1, 3, 4, True).tolist() == [
        31,
        40,
        33,
        28,
        34,
        38,
        32,
        46,
        18,
        37,
        23,
        2,
        22,
        20,
        43,
        4,
    ]
    assert shard_indices(50, 42, 0, 0, 2, 4, True).tolist() == [
        48,
        0,
        25,
        42,
        45,
        31,
        4,
        6,
        37,
        12,
        29,
        9,
        24,
        28,
        10,
        14,
        15,
        3,
        27,
        47,
        1,
        41,
        22,
        11,
    ]
    assert shard_indices(103, 2**31 - 1, 1, 7, 8, 4, True).tolist() == [45, 64, 4, 41, 40, 65, 25, 72, 78, 67, 43, 88]
    assert shard_indices(7, 0, 1, 2, 3, 1, False).tolist() == [2, 5]


@pytest.mark.parametrize("n,world,batch", [(50, 1, 4), (50, 3, 4), (103, 8, 4), (7, 2, 1), (1000, 4, 32)])
def test_in_memory_and_folder_loaders_shard_alike(n, world, batch):
    for seed, epoch in ((0, 0), (1, 3), (42, 7)):
        perm = epoch_permutation(n, seed, epoch)
        train, evals = [], []
        for rank in range(world):
            for is_train, seen in ((True, train), (False, evals)):
                want = shard_indices(n, seed, epoch, rank, world, batch, is_train)
                mem = InMemoryLoader(
                    torch.zeros(n, 1, 1, 1, dtype=torch.uint8),
                    torch.zeros(n, dtype=torch.int64),
                    batch,
                    train=is_train,
                    seed=seed,
                    rank=rank,
                    world_size=world,
                )
                folder = ShardedSampler(n, batch, is_train, seed, rank, world)
                mem.set_epoch(epoch)
                folder.set_epoch(epoch)
                assert torch.equal(mem.indices(), want) and torch.equal(folder.indices(), want)
                assert [i for i, _ in folder] == want.tolist() and len(folder) == len(want)
                seen.append(want)
        steps = n // world // batch
        assert all(len(t) == steps * batch for t in train)  # every rank runs the same number of steps
        assert torch.equal(torch.cat(train).sort().values, perm[: steps * batch * world].sort().values)
        assert torch.equal(torch.cat(evals).sort().values, torch.arange(n))  # each sample on exactly one rank


def test_too_few_training_images_for_the_batches():
    with pytest.raises(ValueError, match="too few"):
        shard_indices(7, 0, 0, 0, 2, 4, True)
    with pytest.raises(UserError, match="too few"):
        ShardedSampler(7, 4, True, 0, 0, 2)
    assert shard_indices(7, 0, 0, 1, 2, 4, False).tolist() == [1, 3, 5]


# --------------------------------------------------------------------------- augmentation


def _gen(seed, device="cpu"):
    return torch.Generator(device=device).manual_seed(seed)


def _batch(n=64, c=3, seed=0, device="cpu"):
    return torch.randint(0, 256, (n, c, 32, 32), dtype=torch.uint8, generator=_gen(seed)).to(device)


def test_random_crop_is_a_shifted_window_per_sample():
    x = _batch(256)
    out = random_crop(x, 4, _gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (4, 4, 4, 4))
    offsets = set()
    for i in range(len(x)):  # per-sample reference: which of the 81 windows is it?
        hits = [(a, b) for a in range(9) for b in range(9) if torch.equal(out[i], padded[i, :, a : a + 32, b : b + 32])]
        assert len(hits) == 1, i
        offsets.add(hits[0])
    assert len(offsets) > 60  # offsets spread over the 81 possible ones
    # shift_crop against an explicit per-image crop
    dy, dx = torch.randint(0, 9, (256,), generator=_gen(2)), torch.randint(0, 9, (256,), generator=_gen(3))
    ref = torch.stack([padded[i, :, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32] for i in range(256)])
    assert torch.equal(shift_crop(x, 4, dy, dx), ref)
    # float batches crop identically
    assert torch.equal(random_crop(x.float(), 4, _gen(1)), out.float())


def test_random_flip_flips_exactly_the_selected():
    x = _batch(512)
    out = random_flip(x, _gen(5))
    selected = torch.rand(512, generator=_gen(5)) < 0.5
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(512)])
    same = torch.tensor([torch.equal(out[i], x[i]) for i in range(512)])
    assert torch.equal(flipped, selected) and torch.equal(same, ~selected)
    assert 180 < int(selected.sum()) < 332


def test_cutout_zeroes_a_square():
    x = torch.full((200, 3, 32, 32), 255, dtype=torch.uint8)
    out = cutout(x, 8, _gen(0))
    full = 0
    for i in range(200):
        z = out[i] == 0
        assert torch.equal(z[0], z[1]) and torch.equal(z[0], z[2])
        rows, cols = z[0].any(1).nonzero().flatten(), z[0].any(0).nonzero().flatten()
        assert len(rows) and len(cols)
        h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert int(z[0].sum()) == h * w and h <= 8 and w <= 8  # a filled rectangle, clipped square
        if 0 < rows[0] and rows[-1] < 31 and 0 < cols[0] and cols[-1] < 31:
            assert (h, w) == (8, 8)
            full += 1
    assert full > 50


def test_augment_determinism_and_seeds():
    x = _batch(128)
    aug = BatchAugment(crop_padding=4, flip=True, cutout=8)
    a, b, c = aug(x, _gen(7)), aug(x, _gen(7)), aug(x, _gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(BatchAugment(0, False, 0)(x, _gen(0)), x)
    g = _gen(3)
    assert not torch.equal(aug(x, g), aug(x, g))  # the generator advances


def test_normalize():
    x = _batch(4)
    mean, std = stats("cifar10")
    y = normalize(x, mean, std, torch.float32)
    ref = (x.double() / 255 - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    assert y.dtype == torch.float32 and torch.allclose(y.double(), ref, atol=1e-5)
    assert torch.allclose(normalize(x.float() / 255, mean, std).double(), ref, atol=1e-5)
    g = _batch(4, c=1)
    m, s = stats("fashion-mnist")
    yg = normalize(g, m, s, torch.bfloat16)
    assert yg.shape == (4, 3, 32, 32) and yg.dtype == torch.bfloat16
    assert torch.equal(yg[:, 0], yg[:, 2])
    assert normalize(g, m, s, channels=None).shape == (4, 1, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augment_cuda_matches_shapes_and_is_deterministic():
    x = _batch(256, device="cuda")
    aug = BatchAugment(4, True, 8)
    a, b = aug(x, _gen(1, "cuda")), aug(x, _gen(1, "cuda"))
    assert a.is_cuda and torch.equal(a, b) and a.shape == x.shape
    out = random_crop(x, 4, _gen(2, "cuda")).cpu()
    padded = F.pad(x.cpu(), (4, 4, 4, 4))
    for i in range(0, 256, 17):
        assert any(torch.equal(out[i], padded[i, :, p : p + 32, q : q + 32]) for p in range(9) for q in range(9))
    with pytest.raises(ValueError, match="generator"):
        aug(x, _gen(1))


def test_crop_size_takes_uniform_windows_of_the_padded_image():
    x = torch.arange(32 * 32).view(1, 1, 32, 32).repeat(4000, 1, 1, 1)
    y = BatchAugment(crop_padding=0, flip=False, crop_size=28)(x, torch.Generator().manual_seed(0))
    assert y.shape == (4000, 1, 28, 28)
    rows, cols = (y[:, 0, 0, 0] // 32), (y[:, 0, 0, 0] % 32)
    assert sorted(set(rows.tolist())) == [0, 1, 2, 3, 4] == sorted(set(cols.tolist()))
    # each window is a contiguous 28x28 block of the source
    block = (torch.arange(28)[:, None] * 32 + torch.arange(28)).expand(4000, 28, 28)
    assert torch.equal(y[:, 0] - y[:, 0, :1, :1], block)
    with_pad = BatchAugment(crop_padding=2, flip=False, crop_size=28)(x + 1, torch.Generator().manual_seed(1))
    assert (with_pad == 0).any()  # offsets reach into the zero padding (the source has no zeros)
