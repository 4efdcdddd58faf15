"""ImageNet-style folders: scanning, decoding odd files, preprocessing, the imagenet.py flags."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from tests._data import QUIET_RUN, needs_woof
from torchcls.cli import build_parser, main
from torchcls.commands.train import config_from_args
from torchcls.data.folder import (
    FolderDataset,
    FolderLoader,
    collate_skipping,
    eval_transform,
    random_resized_crop_box,
    scan_folder,
    to_uint8_tensor,
)
from torchcls.engine.setup import build_model
from torchcls.models.imagenet.torchvision_models import default_weights_file


def noise_image(w, h, seed, mode="RGB"):
    g = torch.Generator().manual_seed(seed)
    arr = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
    img = Image.fromarray(arr, "RGB")
    return img.convert(mode) if mode != "RGB" else img


def make_folder(root: Path, classes=("ant", "bee"), n_train=6, n_val=2) -> Path:
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                noise_image(40 + 7 * i, 50 - 3 * i, seed=100 * c + i).save(d / f"{i}.JPEG", quality=90)
    return root


@pytest.fixture
def odd_folder(tmp_path):
    """A folder whose train/ holds a grayscale, a CMYK, a truncated and a zero-byte JPEG."""
    root = make_folder(tmp_path / "odd")
    ant = root / "train" / "ant"
    noise_image(45, 35, 7, mode="L").save(ant / "gray.JPEG")
    noise_image(45, 35, 8, mode="CMYK").save(ant / "cmyk.JPEG")
    full = (ant / "0.JPEG").read_bytes()
    (ant / "truncated.JPEG").write_bytes(full[: len(full) // 2])
    (ant / "empty.JPEG").write_bytes(b"")
    return root


def test_scan_finds_classes_and_images(odd_folder):
    train, val = scan_folder(odd_folder)
    assert train.classes == val.classes == ["ant", "bee"]
    assert len(train) == 12 + 4 and len(val) == 4
    assert {y for _, y in train.samples} == {0, 1}


def test_grayscale_and_cmyk_become_rgb_and_bad_files_are_none(odd_folder):
    train, _ = scan_folder(odd_folder)
    ds = FolderDataset(train, train=True, size=24, seed=0)
    by_name = {Path(p).name: i for i, (p, _) in enumerate(train.samples) if Path(p).parent.name == "ant"}
    for name in ("gray.JPEG", "cmyk.JPEG", "0.JPEG"):
        x, y, _ = ds[(by_name[name], 0)]
        assert x.dtype == torch.uint8 and x.shape == (3, 24, 24) and y == 0
    gray, _, _ = ds[(by_name["gray.JPEG"], 0)]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # L -> RGB: equal channels
    for name in ("truncated.JPEG", "empty.JPEG"):
        x, y, path = ds[(by_name[name], 0)]
        assert x is None and path.endswith(name)
    images, labels, bad = collate_skipping([ds[(by_name[n], 0)] for n in ("0.JPEG", "empty.JPEG", "cmyk.JPEG")])
    assert images.shape == (2, 3, 24, 24) and labels.tolist() == [0, 0] and bad[0].endswith("empty.JPEG")


def test_crop_is_a_function_of_seed_epoch_and_index(odd_folder):
    train, _ = scan_folder(odd_folder)
    ds = FolderDataset(train, train=True, size=16, seed=5)
    assert torch.equal(ds[(3, 1)][0], ds[(3, 1)][0])
    assert not torch.equal(ds[(3, 1)][0], ds[(3, 2)][0])
    assert not torch.equal(ds[(3, 1)][0], FolderDataset(train, train=True, size=16, seed=6)[(3, 1)][0])


def test_random_resized_crop_box_stays_inside_and_varies():
    g = torch.Generator().manual_seed(0)
    boxes = [random_resized_crop_box(320, 240, g) for _ in range(200)]
    for left, top, w, h in boxes:
        assert 0 <= left and left + w <= 320 and 0 <= top and top + h <= 240 and w > 0 and h > 0
    areas = [w * h / (320 * 240) for _, _, w, h in boxes]
    assert min(areas) < 0.2 and max(areas) > 0.8


def test_eval_transform_equals_torchvision_resize_centercrop():
    tv = transforms.Compose([transforms.Resize(73), transforms.CenterCrop(64), transforms.PILToTensor()])
    for w, h in ((320, 240), (240, 333), (100, 100)):
        img = noise_image(w, h, seed=w)
        ours = to_uint8_tensor(eval_transform(img, 73, 64))
        assert torch.equal(ours, tv(img)), (w, h)


def test_loader_shards_and_workers_give_the_same_batches(odd_folder):
    train, val = scan_folder(odd_folder)
    kw = dict(size=16, resize=18, flip=True, seed=1, device=torch.device("cpu"))
    one = FolderLoader(train, 4, train=True, rank=0, world_size=1, workers=0, **kw)
    one.set_epoch(2)
    batches = list(one.iterate())
    assert len(one) == len(batches) == 4  # 16 files, 2 unreadable: batches are 4 files, some short
    assert sum(len(y) for _, y in batches) == 14 and len(one.take_skipped()) == 2
    worker = FolderLoader(train, 4, train=True, rank=0, world_size=1, workers=1, **kw)
    worker.set_epoch(2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, worker.iterate(), strict=True))
    resumed = list(worker.iterate(start_batch=2))
    assert len(resumed) == 2 and torch.equal(resumed[0][0], batches[2][0])
    # evaluation: every image on exactly one rank, nothing padded
    seen = []
    for rank in range(3):
        ev = FolderLoader(val, 3, train=False, rank=rank, world_size=3, workers=0, **kw)
        seen += [y for _, y in ev.iterate()]
    assert sum(len(y) for y in seen) == len(val)


def run_cli(args, capsys):
    code = main(["train", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


TINY = [
    *"-a resnet18 --dataset imagenet --epochs 1 --train-batch 8 --test-batch 8".split(),
    *"--train-size 32 --val-size 32 --val-resize 36".split(),
    *QUIET_RUN,
]


def test_training_skips_unreadable_files_and_names_them(odd_folder, tmp_path, capsys):
    code, out = run_cli(
        [*TINY, "--data", str(odd_folder), "--store", "off", "-j", "1", "-c", str(tmp_path / "run")], capsys
    )
    assert code == 0, out
    assert "skipped 2 unreadable file(s) this epoch (training)" in out
    assert "truncated.JPEG" in out and "empty.JPEG" in out
    ckpt = tmp_path / "run" / "checkpoint.pth.tar"
    assert main(["eval", str(ckpt), "--json"]) == 0  # the folder and its preprocessing come from the checkpoint
    res = json.loads(capsys.readouterr().out)
    assert res["dataset"] == "imagenet" and res["count"] == 4 and res["image_size"] == 32
    assert res["source"] == "files"  # a --store off run is evaluated from its files
    assert main(["eval", str(ckpt), "--json", "--val-size", "48"]) == 0  # a higher test resolution (FixRes)
    res = json.loads(capsys.readouterr().out)
    assert res["count"] == 4 and res["image_size"] == 48
    assert main(["eval", str(ckpt), "--val-size", "48", "--val-resize", "40"]) == 2
    assert "must be at least --val-size" in capsys.readouterr().err


@pytest.mark.parametrize(
    "breakage,message",
    [
        ("empty_class", "holds no image files"),
        ("val_mismatch", "differ from those of train/"),
        ("no_val", "has no val/ folder"),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path, capsys, breakage, message):
    root = make_folder(tmp_path / "bad", n_train=2, n_val=1)
    if breakage == "empty_class":
        (root / "train" / "cat").mkdir()
        (root / "val" / "cat").mkdir()
    elif breakage == "val_mismatch":
        (root / "val" / "bee").rename(root / "val" / "bear")
    else:
        shutil.rmtree(root / "val")
    code, out = run_cli([*TINY, "--data-dir", str(root), "-j", "0", "-c", str(tmp_path / "run")], capsys)
    assert code == 2 and message in out and "Traceback" not in out


def test_imagenet_defaults_and_flags():
    def parse(*a):
        return config_from_args(build_parser().parse_args(["train", *a]))

    cfg = parse("-a", "resnext50", "--base-width", "4", "--cardinality", "32", "--data", "/x", "-d", "imagenet")
    assert (cfg.train_batch, cfg.test_batch, cfg.weight_decay, cfg.epochs) == (256, 200, 1e-4, 90)
    assert cfg.data_dir == "/x" and cfg.dataset == "imagenet"
    assert (cfg.train_size, cfg.val_size, cfg.val_resize) == (224, 224, 256)
    cfg = parse("-a", "resnet18", "-d", "imagefolder", "--epochs", "3", "--wd", "5e-4", "--train-batch", "64")
    assert (cfg.dataset, cfg.epochs, cfg.weight_decay, cfg.train_batch, cfg.test_batch) == (
        "imagenet",
        3,
        5e-4,
        64,
        200,
    )
    cfg = parse("-a", "resnet20", "-d", "cifar10")  # the in-memory sets keep cifar.py's defaults
    assert (cfg.train_batch, cfg.weight_decay, cfg.epochs) == (128, 5e-4, 300)
    cfg = parse("-a", "resnext50", "--base-width", "4", "--cardinality", "32", "-d", "imagenet")
    assert sum(p.numel() for p in build_model(cfg, 1000).parameters()) == 25_028_904  # ResNeXt-50 32x4d


def test_pretrained_reads_the_local_cache_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, out = run_cli([*TINY, "--data", str(tmp_path), "--pretrained"], capsys)
    assert code == 2 and "not in the local torch hub cache" in out and "resnet18-" in out
    # a stand-in for torchvision's file: torchvision's own resnet18 state_dict, saved where it would be cached
    path = Path(default_weights_file("resnet18"))
    path.parent.mkdir(parents=True)
    ref = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(ref, path)
    cfg = config_from_args(build_parser().parse_args(["train", *TINY, "--pretrained"]))
    model = build_model(cfg, 10)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in ref.items() if not k.startswith("fc."))
    assert got["fc.weight"].shape == (10, 512)
    code, out = run_cli(["-a", "alexnet", "--pretrained", "--epochs", "1"], capsys)
    assert code == 2 and "no ImageNet weights are known" in out


@needs_woof
def test_imagewoof_mini_scans_and_its_grayscale_jpegs_decode(woof):
    train, val = scan_folder(woof)
    assert len(train.classes) == 10 and len(train) == 400 and len(val) == 150
    ds = FolderDataset(train, train=False, size=64, resize=73)
    gray = [i for i, (p, _) in enumerate(train.samples) if Image.open(p).mode != "RGB"]
    gray += [len(train) + i for i, (p, _) in enumerate(val.samples) if Image.open(p).mode != "RGB"]
    assert len(gray) == 4
    vds = FolderDataset(val, train=False, size=64, resize=73)
    for i in gray:
        x = ds[i][0] if i < len(train) else vds[i - len(train)][0]
        assert x is not None and x.shape == (3, 64, 64)
