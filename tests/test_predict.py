"""`torchcls predict` on real images with models trained here: the same predictions as `torchcls eval`
and the data-set path, every image mode, broken files, foreign checkpoints, the output formats."""

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from tests._data import DATA, QUIET_RUN, needs_cifar, needs_fmnist, write_png_tree
from torchcls.cli import main
from torchcls.commands.eval import evaluate_checkpoint
from torchcls.data.datasets import load_dataset
from torchcls.data.folder import FolderDataset, scan_folder
from torchcls.engine.checkpoint import safe_load
from torchcls.inference import UnreadableImage, load_for_inference, predict_logits, preprocess_images

N_CIFAR, N_FMNIST = 300, 300


def train_run(tmp, args) -> Path:
    run = tmp / "run"
    assert main(["train", *args, "-c", str(run), *QUIET_RUN, "--lr", "0.05"]) == 0
    return run / "checkpoint.pth.tar"


def predict(args, capsys, stdin=None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    code = main(["predict", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def accuracy_line(text: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith("accuracy on")]
    return float(line.split("top-1 ")[1].split("%")[0])


# ----------------------------------------------------------------------------- models trained here


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """SpeedNet-mini trained 2 epochs on 1,500 CIFAR-10 images; the first N_CIFAR test images as PNG files
    in class folders (a labelled tree), file names = test-set index."""
    if not (DATA / "cifar-10-batches-py.tar.xz").is_file():
        pytest.skip(f"CIFAR-10 not in {DATA}")
    tmp = tmp_path_factory.mktemp("cifar")
    ckpt = train_run(tmp, f"-a speednet_mini -d cifar10 --data-dir {DATA} --train-subset 1500 --test-subset 300 "
                     "--epochs 2 --train-batch 100 --test-batch 300".split())  # fmt: skip
    test = load_dataset("cifar10", str(DATA), train=False).subset(slice(0, N_CIFAR))
    root = write_png_tree(test, tmp / "pngs", N_CIFAR)
    return ckpt, root, test


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """speednet_mini (1 channel) trained on 28x28 crops of Fashion-MNIST, evaluated on the central 28x28
    (input_size 28); the first N_FMNIST test pictures as 28x28 grayscale PNG files in one folder."""
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST system package is not installed")
    tmp = tmp_path_factory.mktemp("fmnist")
    ckpt = train_run(tmp, "-a speednet_mini -d fashion-mnist --train-subset 2000 --test-subset 500 --epochs 1 "
                     "--train-batch 100 --test-batch 500 --train-crop 28 --crop-padding 0".split())  # fmt: skip
    test = load_dataset("fashion-mnist", None, train=False).subset(slice(0, N_FMNIST))
    root = tmp / "pngs"
    root.mkdir()
    for i in range(N_FMNIST):
        Image.fromarray(test.images[i, 0, 2:30, 2:30].numpy(), "L").save(root / f"{i:05d}.png")
    return ckpt, root, test


@pytest.fixture(scope="module")
def woof_ckpt(woof, tmp_path_factory):
    """resnet20 trained one epoch on the real imagewoof-mini photos (Resize 36 + CenterCrop 32)."""
    tmp = tmp_path_factory.mktemp("woofrun")
    return train_run(tmp, f"-a resnet20 -d imagenet --data {woof} --epochs 1 --train-batch 50 --test-batch 50 "
                     "--train-size 32 --val-size 32 --val-resize 36 -j 0".split())  # fmt: skip


@pytest.fixture(scope="module")
def photo(woof) -> Path:
    """One real JPEG photo (RGB) of imagewoof-mini."""
    _, val = scan_folder(woof)
    path = next(p for p, _ in val.samples if Image.open(p).mode == "RGB")
    return Path(path)


# ----------------------------------------------------------------------------- the same as eval


@needs_cifar
def test_cifar_pngs_predict_as_eval_does(cifar, capsys):
    ckpt, root, test = cifar
    code, out, err = predict([ckpt, root, "--format", "jsonl", "-k", "3"], capsys)
    assert code == 0, err
    records = jsonl(out)
    assert len(records) == N_CIFAR and all(len(r["classes"]) == 3 for r in records)
    ev = evaluate_checkpoint(ckpt, data_dir=str(DATA), limit=N_CIFAR)
    hits = sum(r["classes"][0] == r["label"] for r in records)
    assert ev["count"] == N_CIFAR and 100 * hits / N_CIFAR == pytest.approx(ev["top1"], abs=1e-9)
    assert accuracy_line(err) == pytest.approx(ev["top1"], abs=0.005)
    assert ev["top1"] > 20  # it learned something: predictions mean something (chance: 10%)
    # image by image: the PNG files give the data set's tensors, so the same classes
    model, info = load_for_inference(ckpt, "cpu", channels_last=True)  # as predict and eval run it
    paths = [Path(r["path"]) for r in records]
    index = [int(p.stem) for p in paths]
    assert torch.equal(preprocess_images(paths, info), test.images[index])
    expected = predict_logits(model, test.images[index], info, channels_last=True).argmax(1)
    assert [r["classes"][0] for r in records] == [info.classes[i] for i in expected.tolist()]
    assert [r["label"] for r in records] == [test.classes[int(test.labels[i])] for i in index]
    # flip test-time augmentation: as eval's
    code, out, err = predict([ckpt, root, "--format", "json", "--tta-flip"], capsys)
    assert code == 0 and len(json.loads(out)) == N_CIFAR and "accuracy on 300" in err
    tta = evaluate_checkpoint(ckpt, data_dir=str(DATA), limit=N_CIFAR, tta_flip=True)
    recs = json.loads(out)
    hits = sum(r["classes"][0] == r["label"] for r in recs)
    assert 100 * hits / N_CIFAR == pytest.approx(tta["top1"], abs=1e-9)


@needs_fmnist
def test_fashion_mnist_pngs_predict_as_the_data_set_path(fmnist, capsys):
    ckpt, root, test = fmnist
    model, info = load_for_inference(ckpt, "cpu", channels_last=True)
    assert info.channels == 1 and info.input_size == 28 and info.preprocessing.mode == "L"
    code, out, err = predict([ckpt, root, "--format", "csv", "--batch-size", "64"], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["path"]).name for r in rows] == [f"{i:05d}.png" for i in range(N_FMNIST)]
    central = test.center_crop(28)  # what eval runs the model on: the original 28x28 pictures
    assert torch.equal(preprocess_images(sorted(root.iterdir()), info), central.images)
    expected = predict_logits(model, central.images, info, channels_last=True).argmax(1)
    assert [r["class_1"] for r in rows] == [info.classes[i] for i in expected.tolist()]
    hits = sum(r["class_1"] == test.classes[int(y)] for r, y in zip(rows, test.labels, strict=True))
    ev = evaluate_checkpoint(ckpt, limit=N_FMNIST)
    assert 100 * hits / N_FMNIST == pytest.approx(ev["top1"], abs=1e-9) and ev["top1"] > 30


def test_real_photos_labelled_tree_accuracy_equals_eval(woof, woof_ckpt, capsys):
    code, out, err = predict([woof_ckpt, woof / "val", "--format", "jsonl"], capsys)
    assert code == 0, err
    records = jsonl(out)
    ev = evaluate_checkpoint(woof_ckpt, folder=woof / "val")  # eval of the same files, as predict decodes them
    hits = sum(r["classes"][0] == r["label"] for r in records)
    assert len(records) == ev["count"] == 150 and 100 * hits / 150 == pytest.approx(ev["top1"], abs=1e-9)
    assert accuracy_line(err) == pytest.approx(ev["top1"], abs=0.005)  # as printed: two decimals
    _, val = scan_folder(woof)
    assert [r["path"] for r in records] == [p for p, _ in val.samples]  # input order: sorted as a folder
    ds = FolderDataset(val, train=False, size=32, resize=36)
    _, info = load_for_inference(woof_ckpt, "cpu")
    assert torch.equal(
        preprocess_images([p for p, _ in val.samples[:20]], info), torch.stack([ds[i][0] for i in range(20)])
    )
    # on the terminal: a table, then the accuracy
    code, out, _ = predict([woof_ckpt, woof / "val" / val.classes[0]], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["image", "top-1", "top-2"] and len(lines) == 2 + 15
    assert "accuracy" not in out  # a class folder alone is not a labelled tree


# ----------------------------------------------------------------------------- image modes and broken files


def test_every_image_mode_predicts(woof_ckpt, fmnist, photo, tmp_path, capsys):
    img = Image.open(photo)
    files = {
        "gray.jpg": img.convert("L"),
        "cmyk.jpg": img.convert("CMYK"),
        "rgba.png": img.convert("RGBA"),
        "palette.png": img.convert("P", palette=Image.Palette.ADAPTIVE),
        "la.png": img.convert("LA"),
        "photo.webp": img,
        "photo.bmp": img,
        "gray16.png": img.convert("I;16"),
    }
    for name, im in files.items():
        im.save(tmp_path / name)
    for ckpt in (woof_ckpt, fmnist[0]):  # an RGB model and a grayscale one
        code, out, err = predict([ckpt, tmp_path, "--format", "json"], capsys)
        assert code == 0, err
        assert sorted(Path(r["path"]).name for r in json.loads(out)) == sorted(files)
    _, info = load_for_inference(woof_ckpt, "cpu")
    gray = preprocess_images([tmp_path / "gray.jpg"], info)[0]
    assert gray.shape == (3, 32, 32) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_unreadable_files_are_one_line_each_and_the_rest_predicted(woof_ckpt, photo, tmp_path, capsys):
    good = [tmp_path / f"good{i}.jpg" for i in range(3)]
    for p in good:
        shutil.copy(photo, p)
    (tmp_path / "garbage.jpg").write_bytes(b"this is not a JPEG at all" * 40)
    (tmp_path / "truncated.jpg").write_bytes(photo.read_bytes()[: photo.stat().st_size // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    args = [woof_ckpt, good[0], tmp_path / "garbage.jpg", good[1], tmp_path / "truncated.jpg", tmp_path / "empty.png",
            good[2], tmp_path / "missing.jpg", "--format", "jsonl"]  # fmt: skip
    code, out, err = predict(args, capsys)
    assert code == 1 and "Traceback" not in err
    assert [r["path"] for r in jsonl(out)] == [str(p) for p in good]
    for bad in ("garbage.jpg", "truncated.jpg", "empty.png", "missing.jpg"):
        assert len([line for line in err.splitlines() if bad in line]) == 1, err
    with pytest.raises(UnreadableImage, match="truncated"):
        preprocess_images([tmp_path / "truncated.jpg"], load_for_inference(woof_ckpt, "cpu")[1])


def test_folder_whose_classes_do_not_match_is_plain_images(woof_ckpt, photo, tmp_path, capsys):
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        shutil.copy(photo, tmp_path / name / "a.jpg")
    code, out, err = predict([woof_ckpt, tmp_path, "--format", "jsonl"], capsys)
    assert code == 0 and len(jsonl(out)) == 2 and "accuracy on" not in err
    notes = [line for line in err.splitlines() if "not classes of this checkpoint" in line]
    assert len(notes) == 1 and "'cat'" in notes[0] and len(err.splitlines()) == 1


def test_foreign_checkpoints_are_one_line_exit_2(woof_ckpt, photo, tmp_path, capsys):
    state = safe_load(woof_ckpt)
    foreign = {
        "plain.pth": {"weights": torch.zeros(3), "epoch": 3},
        "torchvision.pth": torchvision.models.squeezenet1_1(weights=None).state_dict(),
        "original.pth.tar": {"state_dict": state["state_dict"], "epoch": 1, "best_acc": 0.0},
        "unknown_arch.pth.tar": {**state, "arch": "efficientnet_b42"},
    }
    for name, obj in foreign.items():
        torch.save(obj, tmp_path / name)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    for name in [*foreign, "text.pth", "absent.pth"]:
        code, out, err = predict([tmp_path / name, photo], capsys)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("torchcls: error:") and "Traceback" not in err


# ----------------------------------------------------------------------------- inputs and formats


def test_formats_keep_input_order_and_stdin_globs(cifar, capsys, monkeypatch, tmp_path):
    ckpt, root, _ = cifar
    files = sorted(root.glob("*/*.png"))[:12]
    order = files[::-1]  # not sorted: output follows the input
    code, out, _ = predict([ckpt, *order, "--format", "json", "--logits"], capsys)
    recs = json.loads(out)
    assert code == 0 and [r["path"] for r in recs] == [str(p) for p in order]
    for r in recs:  # the top-5 probabilities are the softmax of the logits (every class's, in class order)
        p = torch.tensor(r["logits"]).softmax(0).sort(descending=True).values[:5]
        assert len(r["logits"]) == 10 and r["probabilities"] == pytest.approx(p.tolist())
    top = [torch.tensor(r["logits"]).argmax().item() for r in recs]
    _, info = load_for_inference(ckpt, "cpu")
    assert [r["classes"][0] for r in recs] == [info.classes[i] for i in top]
    code, _, _ = predict([ckpt, *order, "-o", tmp_path / "p.csv"], capsys)
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert code == 0 and [r["path"] for r in rows] == [str(p) for p in order] and "prob_5" in rows[0]
    assert [r["class_1"] for r in rows] == [r["classes"][0] for r in recs]
    code, out, _ = predict([ckpt, "-", "--format", "jsonl"], capsys, "\n".join(map(str, order)) + "\n", monkeypatch)
    assert code == 0 and [r["path"] for r in jsonl(out)] == [str(p) for p in order]
    code, out, _ = predict([ckpt, f"{root}/airplane/*.png", "--format", "jsonl"], capsys)
    assert code == 0 and len(jsonl(out)) == len(list((root / "airplane").glob("*.png")))
    code, _, err = predict([ckpt, f"{root}/none-*.png"], capsys)
    assert code == 2 and "no file matches" in err
    code, _, err = predict([ckpt], capsys)
    assert code == 2 and "at least one INPUT" in err
