"""The decoded image store (data/store.py): format round trip, crops against PIL/torchvision,
change detection, damaged stores, sharding and resuming, and the train/prepare commands on it."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from tests._data import QUIET_RUN
from tests.test_folder import make_folder, noise_image
from torchcls.cli import main
from torchcls.data.folder import (
    FolderDataset,
    load_rgb,
    random_resized_crop_box,
    sample_generator,
    scan_folder,
)
from torchcls.data.store import (
    StaleStore,
    StoreLoader,
    build_store,
    default_store_path,
    open_store,
    resolve_store,
    stored_size,
    train_view,
)
from torchcls.errors import UserError

CPU = torch.device("cpu")


def quiet(*_a, **_k):
    pass


@pytest.fixture
def folder(tmp_path):
    """Noise images of odd sizes (JPEG, PNG, grayscale, CMYK) and two unreadable files."""
    root = make_folder(tmp_path / "src", n_train=5, n_val=3)
    bee = root / "train" / "bee"
    noise_image(61, 47, 3, mode="L").save(bee / "gray.png")
    noise_image(45, 35, 8, mode="CMYK").save(bee / "cmyk.JPEG")
    noise_image(300, 200, 9).save(bee / "big.png")
    (bee / "empty.JPEG").write_bytes(b"")
    full = (bee / "0.JPEG").read_bytes()
    (bee / "truncated.JPEG").write_bytes(full[: len(full) // 2])
    return root


def readable(split):
    """The scanned samples that decode, in scan order (the store's order)."""
    out = []
    for path, label in split.samples:
        try:
            out.append((path, label, np.asarray(load_rgb(path))))
        except Exception:
            pass
    return out


def test_round_trip_keeps_every_pixel_and_names_unreadable_files_once(folder, tmp_path):
    lines = []
    store = build_store(folder, tmp_path / "store", max_size=1000, workers=2, log=lines.append)
    text = "\n".join(lines)
    assert "2 unreadable file(s) left out of the store" in text
    assert "train/bee/empty.JPEG" in text and "train/bee/truncated.JPEG" in text
    meta, splits = open_store(store, folder)
    train, val = scan_folder(folder)
    assert meta["classes"] == train.classes == ["ant", "bee"] and meta["max_size"] == 1000
    for split, scanned in ((splits["train"], train), (splits["val"], val)):
        expected = readable(scanned)
        assert len(split) == len(expected)
        for i, (path, label, arr) in enumerate(expected):
            assert int(split.labels[i]) == label
            assert np.array_equal(split.image(i), arr), path  # grayscale and CMYK became RGB, as load_rgb does
    assert len(splits["train"]) == len(train) - 2
    # reuse: opened, not rebuilt, nothing named again
    again = []
    resolve_store(folder, str(store), 1000, log=again.append)
    assert not any("unreadable" in line or "decoding" in line for line in again), again


def test_images_above_max_size_are_shrunk_on_their_shorter_side(folder, tmp_path):
    _, splits = open_store(build_store(folder, tmp_path / "s", max_size=32, log=quiet))
    train, _ = scan_folder(folder)
    for i, (path, _, arr) in enumerate(readable(train)):
        h, w = arr.shape[:2]
        sw, sh = stored_size(w, h, 32)
        assert min(sh, sw) == min(32, h, w) and splits["train"].image(i).shape == (sh, sw, 3)
        if path.endswith("big.png"):  # no JPEG draft for a PNG: exactly PIL's bilinear resize
            assert (sw, sh) == (48, 32)
            want = np.asarray(Image.fromarray(arr).resize((sw, sh), Image.BILINEAR))
            assert np.array_equal(splits["train"].image(i), want)


def test_crops_equal_torchvision_on_pil_within_rounding(woof, tmp_path):
    """Stored photos (320 px, kept as they are) cropped by the store's path against torchvision's
    resized_crop on the decoded PIL image with the same box, and against the JPEG path's batches."""
    store = build_store(woof, tmp_path / "w", max_size=1000, log=quiet)
    _, splits = open_store(store)
    train, val = scan_folder(woof)
    worst = 0
    for i in range(0, len(train), 37):
        img = load_rgb(train.samples[i][0])
        for epoch in (0, 3):
            g = sample_generator(5, epoch, i)
            left, top, w, h = random_resized_crop_box(img.width, img.height, g, (0.25, 1.0))
            flip = float(torch.rand(1, generator=g)) < 0.5
            ref = TF.pil_to_tensor(TF.resized_crop(img, top, left, h, w, [64, 64]))
            ref = ref.flip(-1) if flip else ref
            ours = train_view(splits["train"].image(i), 64, sample_generator(5, epoch, i), True, (0.25, 1.0), CPU)[0]
            worst = max(worst, (ours.int() - ref.int()).abs().max().item())
    assert worst <= 1
    # whole batches, train and eval, against FolderDataset (the JPEG path, decoding with PIL)
    kw = dict(size=48, resize=56, flip=True, seed=2, rank=0, world_size=1, device=CPU, scale=(0.35, 1))
    for split_name, scanned, is_train in (("train", train, True), ("val", val, False)):
        loader = StoreLoader(splits[split_name], 16, train=is_train, **kw)
        loader.set_epoch(1)
        x, y = next(iter(loader))
        ds = FolderDataset(scanned, is_train, 48, 56, True, 2, (0.35, 1))
        ref = torch.stack([ds[(i, 1)][0] for i in loader.indices()[:16].tolist()])
        assert x.shape == ref.shape == (16, 3, 48, 48) and x.dtype == torch.uint8
        assert (x.int() - ref.int()).abs().max() <= 1, split_name
        assert y.tolist() == [scanned.samples[i][1] for i in loader.indices()[:16].tolist()]


def test_shards_resume_and_prefetch_give_the_same_images(woof, tmp_path):
    _, splits = open_store(build_store(woof, tmp_path / "w", max_size=48, log=quiet))
    kw = dict(size=24, resize=28, flip=True, seed=1, device=CPU)
    one = StoreLoader(splits["train"], 32, train=True, rank=0, world_size=1, **kw)
    one.set_epoch(2)
    batches = list(one.iterate())
    assert len(batches) == len(one) == 400 // 32
    plain = StoreLoader(splits["train"], 32, train=True, rank=0, world_size=1, prefetch=0, **kw)
    plain.set_epoch(2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, plain.iterate(), strict=True))
    resumed = list(one.iterate(start_batch=3))
    assert len(resumed) == len(batches) - 3 and torch.equal(resumed[0][0], batches[3][0])
    one.set_size(16)  # progressive resizing: the same boxes and flips, cropped at the epoch's size
    small = next(iter(one))
    assert small[0].shape[-2:] == (16, 16) and torch.equal(small[1], batches[0][1])
    shrunk = torch.nn.functional.interpolate(batches[0][0].float(), size=(16, 16), mode="bilinear", antialias=True)
    assert (small[0].float() - shrunk).abs().mean() < 8  # the same crops: 1.9 here, another epoch's boxes 66
    one.set_size(24)
    # two ranks of 16 over the same global batch of 32: the same images, rank r holding the r-th of each pair
    ranks = []
    for r in range(2):
        ld = StoreLoader(splits["train"], 16, train=True, rank=r, world_size=2, **kw)
        ld.set_epoch(2)
        ranks.append(list(ld.iterate()))
    for k in range(len(batches)):
        x, y = batches[k]
        assert torch.equal(ranks[0][k][0], x[0::2]) and torch.equal(ranks[1][k][0], x[1::2])
        assert torch.equal(torch.stack([ranks[0][k][1], ranks[1][k][1]], 1).reshape(-1), y)
    seen = 0
    for r in range(3):
        ev = StoreLoader(splits["val"], 7, train=False, rank=r, world_size=3, **kw)
        seen += sum(len(y) for _, y in ev.iterate())
    assert seen == len(splits["val"]) == 150


def test_a_changed_folder_rebuilds_and_a_damaged_store_is_refused(folder, tmp_path):
    path = str(tmp_path / "st")
    lines = []
    resolve_store(folder, path, 40, log=lines.append)
    assert any("decoding" in line for line in lines)
    lines.clear()
    resolve_store(folder, path, 40, log=lines.append)
    assert not any("decoding" in line for line in lines) and any("reading images from the store" in ln for ln in lines)
    # a changed file (new contents, new mtime) is noticed and the store rebuilt
    changed = folder / "train" / "ant" / "1.JPEG"
    noise_image(50, 50, 77).save(changed)
    os.utime(changed, ns=(1, 10**18))
    with pytest.raises(StaleStore):
        open_store(Path(path), folder)
    lines.clear()
    resolve_store(folder, path, 40, log=lines.append)
    assert any("changed since the store" in line and "rebuilding" in line for line in lines)
    # an added file too
    noise_image(30, 30, 5).save(folder / "val" / "bee" / "new.JPEG")
    with pytest.raises(StaleStore):
        open_store(Path(path), folder)
    resolve_store(folder, path, 40, log=quiet)
    open_store(Path(path), folder)  # up to date again
    # truncated data, a damaged index, a garbage meta.json: refused, one line each
    data = Path(path) / "train.u8"
    blob = data.read_bytes()
    data.write_bytes(blob[:-100])
    with pytest.raises(UserError, match=r"damaged \(train.u8 holds \d+ bytes, its index needs \d+\)"):
        open_store(Path(path))
    data.write_bytes(blob)
    index = Path(path) / "val.npz"
    good_index = index.read_bytes()
    index.write_bytes(good_index[:50])
    with pytest.raises(UserError, match="val.npz missing or not the one"):
        open_store(Path(path))
    index.write_bytes(good_index)
    (Path(path) / "meta.json").write_text("{not json")
    with pytest.raises(UserError, match="damaged .meta.json unreadable"):
        resolve_store(folder, path, 40, log=quiet)
    meta = Path(path) / "meta.json"
    meta.write_text(json.dumps({"magic": "something else"}))
    with pytest.raises(UserError, match="not a torchcls store"):
        open_store(Path(path))


TINY = [
    *"-a resnet18 --dataset imagenet --epochs 1 --train-batch 8 --test-batch 8".split(),
    *"--train-size 32 --val-size 32 --val-resize 36".split(),
    *QUIET_RUN,
]


def test_train_builds_the_store_once_then_reuses_it(folder, tmp_path, capsys):
    args = ["train", *TINY, "--data", str(folder), "-j", "1"]
    assert main([*args, "-c", str(tmp_path / "r1")]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    store = default_store_path(folder, 36)  # max(--val-resize, --train-size)
    assert f"into the store {store}/" in text and "2 unreadable file(s) left out of the store" in text
    assert "skipped" not in text  # named once, at build time, never per epoch
    assert main([*args, "-c", str(tmp_path / "r2")]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "decoding" not in text and "unreadable" not in text and f"reading images from the store {store}/" in text
    r1 = json.loads((tmp_path / "r1" / "results.json").read_text())
    r2 = json.loads((tmp_path / "r2" / "results.json").read_text())
    assert r1["final"] == r2["final"]  # same seed, same store: the same run
    # torchcls eval reads the run's store: the run's own figure, exactly
    assert main(["eval", str(tmp_path / "r2" / "checkpoint.pth.tar"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["source"] == "store" and res["top1"] == r2["final"]["top1"]
    # a damaged store given by path: one line, exit 2, nothing trained
    (store / "train.u8").write_bytes(b"\0" * 10)
    code = main([*args, "--store", str(store), "-c", str(tmp_path / "r3")])
    err = capsys.readouterr().err
    assert code == 2 and "is damaged" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r3" / "checkpoint.pth.tar").exists()
    assert main(["eval", str(tmp_path / "r2" / "checkpoint.pth.tar")]) == 2  # nor is it trusted by eval
    assert "is damaged" in capsys.readouterr().err


def test_prepare_command(folder, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["prepare", "--data-dir", str(folder), "--max-size", "40", "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert main(["prepare", "--data-dir", str(folder), "--max-size", "40", "-o", str(out)]) == 0
    assert "is up to date" in capsys.readouterr().out
    assert main(["prepare", "--data-dir", str(folder), "--max-size", "40", "-o", str(out), "--force"]) == 0
    assert "decoding" in capsys.readouterr().out
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["prepare", "--data-dir", str(folder), "-o", str(keep), "--force"]) == 2
    assert "is not a torchcls image store" in capsys.readouterr().err and (keep / "notes.txt").is_file()
    assert main(["prepare", "--dataset", "cifar10", "--data-dir", str(folder)]) == 2
    assert "prepare is for image folders" in capsys.readouterr().err
    assert main(["prepare", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
