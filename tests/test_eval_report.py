"""`torchcls eval` beyond one number: the per-class table, confusion.csv and confusion.png, and
labelled image folders (PNG files written from CIFAR-10 give the data set's own figures)."""

import json
import shlex
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests._data import DATA, QUIET_RUN, write_png_tree
from torchcls.cli import main
from torchcls.commands.eval import evaluate_checkpoint, scan_labelled_folder
from torchcls.data.datasets import load_dataset
from torchcls.errors import UserError
from torchcls.report.confusion import read_confusion_csv

N = 300


def run_cli(args, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """resnet20 trained one epoch on 1,000 real CIFAR-10 images; the first N test images as PNG files
    in class folders."""
    if not (DATA / "cifar-10-batches-py.tar.xz").is_file():
        pytest.skip(f"CIFAR-10 not in {DATA}")
    tmp = tmp_path_factory.mktemp("evalreport")
    args = f"-a resnet20 -d cifar10 --data-dir {DATA} --train-subset 1000 --test-subset 200 --epochs 1 "
    args += "--train-batch 100 --test-batch 200"
    assert main(["train", *shlex.split(args), *QUIET_RUN, "--lr", "0.05", "-c", str(tmp / "run")]) == 0
    test = load_dataset("cifar10", str(DATA), train=False).subset(slice(0, N))
    root = write_png_tree(test, tmp / "pngs", N)
    return tmp / "run" / "checkpoint.pth.tar", root, test


def test_per_class_table_csv_and_heat_map(cifar, tmp_path, capsys):
    ckpt, _, test = cifar
    out = tmp_path / "report"
    code, stdout, err = run_cli(["eval", ckpt, "--data-dir", DATA, "--limit", N, "--per-class", "--out-dir", out],
                                capsys)  # fmt: skip
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith(f"resnet20 on cifar10 test ({N} images): top-1 ")
    assert lines[1].split()[:3] == ["class", "images", "top-1"]
    table = {line.split()[0]: line.split() for line in lines[2:12]}
    assert sorted(table) == sorted(test.classes)
    counts = torch.bincount(test.labels, minlength=10)
    for i, name in enumerate(test.classes):
        assert int(table[name][1]) == int(counts[i])
    classes, matrix = read_confusion_csv(out / "confusion.csv")
    assert classes == test.classes and matrix.shape == (10, 10)
    assert int(matrix.sum()) == N and matrix.sum(1).tolist() == counts.tolist()  # rows: the true classes
    top1 = float(lines[0].split("top-1 ")[1].split("%")[0])
    assert 100 * int(matrix.diag().sum()) / N == pytest.approx(top1, abs=0.005)
    png = (out / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out / "confusion.png") as im:
        im.verify()
    # --json: the table in the JSON, the figures those of a plain eval
    code, stdout, _ = run_cli(["eval", ckpt, "--data-dir", DATA, "--limit", N, "--per-class", "--out-dir", out,
                               "--json"], capsys)  # fmt: skip
    res = json.loads(stdout)
    plain = evaluate_checkpoint(ckpt, data_dir=str(DATA), limit=N)
    assert res["top1"] == pytest.approx(plain["top1"]) and res["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert [r["class"] for r in res["per_class"]] == test.classes and "confusion" not in res
    assert sum(r["correct"] for r in res["per_class"]) == int(matrix.diag().sum())
    assert res["confusion_csv"] == str(out / "confusion.csv")


def test_a_labelled_png_folder_gives_the_data_sets_figures(cifar, tmp_path, capsys):
    ckpt, root, _ = cifar
    common = ["--json", "--per-class", "-j", "0"]
    code, stdout, err = run_cli(["eval", ckpt, "--folder", root, *common, "--out-dir", tmp_path / "f"], capsys)
    assert code == 0, err
    folder = json.loads(stdout)
    code, stdout, _ = run_cli(["eval", ckpt, "--data-dir", DATA, "--limit", N, *common, "--out-dir", tmp_path / "d"],
                              capsys)  # fmt: skip
    data = json.loads(stdout)
    assert folder["count"] == data["count"] == N and folder["split"] == "folder"
    assert folder["top1"] == pytest.approx(data["top1"], abs=1e-9) and data["top1"] > 15
    assert folder["loss"] == pytest.approx(data["loss"], rel=1e-5)
    # image for image: the same confusion matrix
    assert torch.equal(read_confusion_csv(tmp_path / "f" / "confusion.csv")[1],
                       read_confusion_csv(tmp_path / "d" / "confusion.csv")[1])  # fmt: skip


def test_a_folder_of_other_classes_is_one_line(cifar, tmp_path, capsys):
    ckpt, root, _ = cifar
    for name in ("cat", "giraffe"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (32, 32)).save(tmp_path / name / "0.png")
    code, stdout, err = run_cli(["eval", ckpt, "--folder", tmp_path, "-j", "0"], capsys)
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1
    assert "giraffe" in err and "not classes of the model" in err


def test_folder_names_match_loosely_and_an_imagenet_style_folder_gives_val(tmp_path):
    for split, name in (("train", "T-shirt_top"), ("val", "t-shirt top"), ("val", "Trouser")):
        (tmp_path / split / name).mkdir(parents=True)
        Image.new("L", (28, 28)).save(tmp_path / split / name / "0.png")
    classes = ["T-shirt/top", "Trouser", "Pullover"]
    val = scan_labelled_folder(tmp_path, classes)
    assert val.root == tmp_path / "val" and sorted(y for _, y in val.samples) == [0, 1]
    train = scan_labelled_folder(tmp_path, classes, split="train")
    assert [y for _, y in train.samples] == [0] and train.classes == classes
    with pytest.raises(UserError, match="is not a folder"):
        scan_labelled_folder(tmp_path / "missing", classes)
    assert not Path(tmp_path / "val" / "Pullover").exists()
