"""CIFAR-100 as distributed (`cifar-100-python.tar.gz` and its unpacked folder), written small by the
test in the official format, read through the public loader and a short `torchcls train`; a re-packed
but identical data set (another order within each class, another archive) loads the same images."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import pickletools
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._data import QUIET_RUN
from torchcls.cli import main
from torchcls.data import DATASETS, load_dataset

N_TRAIN_PER_CLASS, N_TEST_PER_CLASS = 3, 1


# --------------------------------------------------------------------------- the official format


def _save_byte_string(pickler, obj) -> None:
    """Python 2's str at protocol 2: SHORT_BINSTRING / BINSTRING (what `encoding='bytes'` reads as bytes)."""
    n = len(obj)
    pickler.write(
        pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else pickle.BINSTRING + struct.pack("<i", n) + obj
    )
    pickler.memoize(obj)


class Python2Pickler(pickle._Pickler):
    """Writes what the official files hold (cPickle of Python 2, protocol 2): every string, the dict
    keys and numpy's raw array data among them, as a byte string, and numpy 1.x's global names."""

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = _save_byte_string
    dispatch[str] = lambda self, obj: _save_byte_string(self, obj.encode("latin1"))


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Python2Pickler(buf, protocol=2).dump(obj)
    data = buf.getvalue().replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    # the format's marks: byte-string opcodes only, numpy 1.x names, no Python 3 codecs or unicode
    assert b"numpy._core" not in data and b"_codecs" not in data
    opcodes = {op.name for op, _, _ in pickletools.genops(data)}
    assert "SHORT_BINSTRING" in opcodes and not opcodes & {
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINBYTES",
        "SHORT_BINBYTES",
    }
    return data


def test_the_writer_writes_the_official_format():
    """What the test files are: Python 2 pickles (byte strings, numpy 1.x names), which the standard
    pickle reads only with encoding='bytes', as the official files."""
    batch = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"fine_labels": [1, 2], b"filenames": [b"a.png"]}
    data = py2_pickle(batch)
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in data and b"cnumpy\ndtype\n" in data
    back = pickle.loads(data, encoding="bytes")
    assert back[b"fine_labels"] == [1, 2] and back[b"filenames"] == [b"a.png"]
    assert back[b"data"].dtype == np.uint8 and back[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]]


def make_split(rng, split: str, per_class: int) -> dict:
    fine = np.repeat(np.arange(100), per_class)
    rng.shuffle(fine)
    n = len(fine)
    return {
        b"filenames": [f"{split}_{i:05d}.png".encode() for i in range(n)],
        b"batch_label": f"{split}ing batch 1 of 1".encode(),
        b"fine_labels": [int(v) for v in fine],
        b"coarse_labels": [int(v) // 5 for v in fine],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
    }


META = {
    b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
    b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
}


def write_folder(root: Path, splits: dict) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, batch in splits.items():
        (folder / name).write_bytes(py2_pickle(batch))
    (folder / "meta").write_bytes(py2_pickle(META))
    (folder / "file.txt~").write_bytes(b"")  # the official archive carries this stray file too
    return folder


def tar_gz(folder: Path, archive: Path, order=("train", "test", "meta", "file.txt~"), level=9) -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz", compresslevel=level) as tf:
        tf.add(folder, arcname=folder.name, recursive=False)
        for name in order:
            tf.add(folder / name, arcname=f"{folder.name}/{name}")
    return archive


def reorder_within_classes(batch: dict, rng) -> dict:
    """The same images and labels, each class's images in another order (and the classes interleaved
    differently), as a re-packing tool might write them."""
    labels = np.asarray(batch[b"fine_labels"])
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in rng.permutation(100)])
    return {
        **batch,
        b"filenames": [batch[b"filenames"][i] for i in order],
        b"fine_labels": [int(labels[i]) for i in order],
        b"coarse_labels": [batch[b"coarse_labels"][i] for i in order],
        b"data": np.ascontiguousarray(batch[b"data"][order]),
    }


def as_set(ds) -> list[tuple[int, bytes]]:
    """The data set as a sorted list of (label, image bytes): equal for the same images and labels in any order."""
    return sorted((int(y), x.numpy().tobytes()) for x, y in zip(ds.images, ds.labels, strict=True))


@pytest.fixture
def official(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHCLS_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(100)
    splits = {"train": make_split(rng, "train", N_TRAIN_PER_CLASS), "test": make_split(rng, "test", N_TEST_PER_CLASS)}
    folder = write_folder(tmp_path / "unpacked", splits)
    archive = tar_gz(folder, tmp_path / "archive" / "cifar-100-python.tar.gz")
    return {"splits": splits, "folder": folder, "archive": archive, "rng": rng, "tmp": tmp_path}


# --------------------------------------------------------------------------- tests


def test_official_archive_and_folder_load_through_the_public_loader(official):
    splits, names = official["splits"], [n.decode() for n in META[b"fine_label_names"]]
    folder, archive = official["folder"], official["archive"]
    # the archive itself, the folder holding it, the unpacked folder, the folder holding that
    for where in (archive, archive.parent, folder, folder.parent):
        for train, split in ((True, "train"), (False, "test")):
            ds = load_dataset("cifar100", where, train=train)
            batch = splits[split]
            assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(batch[b"fine_labels"]), 3, 32, 32)
            assert torch.equal(ds.images, torch.from_numpy(batch[b"data"].reshape(-1, 3, 32, 32)))
            assert ds.labels.tolist() == batch[b"fine_labels"]  # fine labels, not coarse
            assert ds.classes == names and ds.num_classes == 100
            assert (ds.mean, ds.std) == (DATASETS["cifar100"].mean, DATASETS["cifar100"].std)
    # a second read of the archive comes from the decoded cache and is the same
    again = load_dataset("cifar100", archive, train=True)
    assert list((official["tmp"] / "cache").glob("cifar100-*.npz"))
    assert torch.equal(again.images, torch.from_numpy(splits["train"][b"data"].reshape(-1, 3, 32, 32)))


def test_repacked_identical_data_set_loads_without_any_checksum(official):
    rng, tmp = official["rng"], official["tmp"]
    repacked = {name: reorder_within_classes(batch, rng) for name, batch in official["splits"].items()}
    folder = write_folder(tmp / "repacked", repacked)
    archive = tar_gz(
        folder, tmp / "repacked-archive" / "cifar-100-python.tar.gz", order=("meta", "test", "train"), level=1
    )
    md5 = [hashlib.md5(p.read_bytes()).hexdigest() for p in (official["archive"], archive)]
    assert md5[0] != md5[1]  # not the same file: nothing may depend on the official archive's md5
    for train in (True, False):
        original = load_dataset("cifar100", official["archive"], train=train)
        for where in (archive, folder):
            ds = load_dataset("cifar100", where, train=train)
            assert not torch.equal(ds.labels, original.labels)  # another order ...
            assert as_set(ds) == as_set(original)  # ... of the same images and labels
            assert ds.classes == original.classes


def test_train_runs_the_recipe_unchanged_on_the_archive_and_the_folder(official, capsys):
    for where, name in ((official["archive"].parent, "from_archive"), (official["folder"], "from_folder")):
        run = official["tmp"] / name
        argv = ["train", "--recipe", "original/cifar100-resnet20", "--data-dir", str(where), "-c", str(run),
                "--epochs", "1", "--schedule", "0", "--train-subset", "100", "--train-batch", "50",
                "--test-batch", "50", *QUIET_RUN]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        res = json.loads((run / "results.json").read_text())
        assert (res["dataset"], res["arch"], res["config"]["recipe"]) == (
            "cifar100",
            "resnet",
            "original/cifar100-resnet20",
        )
        assert res["final"]["set"] == "test" and 0 <= res["final"]["top1"] <= 100
        ckpt = torch.load(run / "model_best.pth.tar", map_location="cpu", weights_only=True)
        assert ckpt["num_classes"] == 100 and ckpt["classes"][:2] == ["fine_00", "fine_01"]
    # the runs, in the results table: the CIFAR-100 ResNet-20 cell, once per run
    capsys.readouterr()
    runs = [str(official["tmp"] / n) for n in ("from_archive", "from_folder")]
    assert main(["results", *runs, "--summaries", "none", "--format", "json"]) == 0
    lines = [
        x for x in json.loads(capsys.readouterr().out) if x["row_key"] == "resnet20" and x["dataset"] == "CIFAR-100"
    ]
    assert [x["recipe"] for x in lines] == ["original/cifar100-resnet20"] * 2
    for x in lines:  # a smoke run: said so, and not compared with the original's figure
        assert x["params_exact"] == 278_324 and x["reaches"] == "not comparable"
        assert x["top1"].endswith("% (trained on 100 images; 1 epoch, not the recipe's 164)"), x["top1"]
