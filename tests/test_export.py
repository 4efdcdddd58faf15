"""`torchcls export`: ONNX, TorchScript and torch.export files that give the PyTorch model's logits on
real images at any batch size, carry their metadata, and fail loudly when they do not match;
`torchcls eval --onnx` gives the checkpoint's own accuracy."""

import importlib.util
import json
import shlex
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from PIL import Image

from tests._data import DATA, QUIET_RUN, needs_cifar, needs_fmnist
from torchcls import __version__
from torchcls.cli import main
from torchcls.commands import export as export_cmd
from torchcls.commands.eval import preprocessing_from_metadata
from torchcls.data.datasets import load_dataset
from torchcls.data.folder import IMAGENET_MEAN, IMAGENET_STD, scan_folder
from torchcls.engine.checkpoint import safe_load
from torchcls.engine.step import prepare
from torchcls.inference import load_checkpoint_model, preprocess_images, preprocessing_for
from torchcls.models import create_model, input_channels
from torchcls.report.confusion import read_confusion_csv

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
FMNIST_MEAN, FMNIST_STD = (0.2860,), (0.3530,)
CHECK = ["--check-images", "24"]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is deprecated, still exported
needs_onnx = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
    reason="the export extra is not installed (pip install 'torchcls[export]')",
)


def run_cli(args, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def random_checkpoint(path: Path, arch: str, dataset: str, classes, mean, std, input_size: int, config=None) -> Path:
    """A checkpoint of a randomly initialised model with random BatchNorm statistics (parity needs no training)."""
    torch.manual_seed(0)
    model = create_model(arch, num_classes=len(classes), in_channels=len(mean))
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    state = {"arch": arch, "model_kwargs": {}, "num_classes": len(classes), "classes": list(classes),
             "mean": list(mean), "std": list(std), "input_size": input_size, "dataset": dataset, "seed": 0,
             "config": config or {}, "torchcls_version": __version__, "state_dict": model.state_dict(),
             "epoch": 0}  # fmt: skip
    torch.save(state, path)
    return path


def run_file(fmt: str, path: Path, x: torch.Tensor) -> torch.Tensor:
    """An exported file's output, run as a user would without torchcls."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    with torch.no_grad():
        return module(x)


def embedded_metadata(fmt: str, path: Path) -> dict:
    if fmt == "onnx":
        onnx = pytest.importorskip("onnx")
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["classes"]) and props["arch"] and props["torchcls_version"] == __version__
        return json.loads(props["torchcls"])
    files = {"torchcls.json": ""}
    if fmt == "torchscript":
        torch.jit.load(str(path), _extra_files=files)
    else:
        torch.export.load(str(path), extra_files=files)
    return json.loads(files["torchcls.json"])


def assert_parity(fmt: str, out: Path, ckpt: Path, images: torch.Tensor, tol: float = 1e-4) -> dict:
    """The file, its sidecar and embedded metadata, and its logits at batch 1 and 7 on `images` (uint8)
    given as x / 255, against the checkpoint's PyTorch model computed here."""
    meta = json.loads(Path(str(out) + ".json").read_text())
    assert embedded_metadata(fmt, out)["classes"] == meta["classes"]
    model, state = load_checkpoint_model(ckpt, torch.device("cpu"), False)
    model.eval()
    assert meta["arch"] == state["arch"] and meta["classes"] == state["classes"] and meta["format"] == fmt
    assert meta["mean"] == list(state["mean"]) and meta["std"] == list(state["std"])
    assert meta["input_size"] == images.shape[-1] and meta["model_channels"] == input_channels(model)
    assert meta["torchcls_version"] == __version__ and meta["input"]["shape"][1:] == list(images.shape[1:])
    assert meta["check"]["passed"] and meta["check"]["top1_agreement"] >= 95
    with torch.no_grad():
        ref = model(prepare(images, state["mean"], state["std"], False, input_channels(model)))
    x = images.float() / 255
    for batch in (x[:1], x[1:8]):  # the batch dimension is dynamic
        got = run_file(fmt, out, batch)
        want = ref[:1] if len(batch) == 1 else ref[1:8]
        assert got.shape == want.shape
        assert (got - want).abs().max() <= tol * max(1.0, float(want.abs().max())), fmt
    return meta


# ----------------------------------------------------------------------------- a model trained here


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """resnet20 trained one epoch on 1,000 real CIFAR-10 images."""
    if not (DATA / "cifar-10-batches-py.tar.xz").is_file():
        pytest.skip(f"CIFAR-10 not in {DATA}")
    run = tmp_path_factory.mktemp("export") / "run"
    args = f"-a resnet20 -d cifar10 --data-dir {DATA} --train-subset 1000 --test-subset 200 --epochs 1 "
    args += "--train-batch 100 --test-batch 200"
    assert main(["train", *shlex.split(args), *QUIET_RUN, "--lr", "0.05", "-c", str(run)]) == 0
    return run / "checkpoint.pth.tar"


@pytest.fixture(scope="module")
def cifar_images():
    return load_dataset("cifar10", str(DATA), train=False).subset(slice(0, 8)).images


@needs_onnx
@needs_cifar
def test_onnx_of_a_trained_resnet20_matches_pytorch_and_its_eval(cifar_run, cifar_images, tmp_path, capsys):
    out = tmp_path / "r20.onnx"
    code, stdout, err = run_cli(["export", cifar_run, "-f", "onnx", "-o", out, "--data-dir", DATA, *CHECK], capsys)
    assert code == 0, err
    assert "checked on 24 cifar10 test images: max |logit difference|" in stdout and "top-1 agreement" in stdout
    meta = assert_parity("onnx", out, cifar_run, cifar_images)
    assert meta["input"]["dtype"] == "float32" and meta["input"]["range"] == "[0, 1]"
    assert meta["dataset"] == "cifar10" and meta["preprocessing"]["size"] == 32 and len(meta["classes"]) == 10
    # the export's accuracy is one command away, and it is the checkpoint's
    common = ["--data-dir", DATA, "--limit", "200", "--json"]
    code, stdout, err = run_cli(["eval", "--onnx", out, *common, "--per-class", "--out-dir", tmp_path / "o"], capsys)
    assert code == 0, err
    onnx_res = json.loads(stdout)
    code, stdout, err = run_cli(["eval", cifar_run, *common, "--per-class", "--out-dir", tmp_path / "c"], capsys)
    torch_res = json.loads(stdout)
    assert onnx_res["count"] == torch_res["count"] == 200 and onnx_res["format"] == "onnx"
    assert onnx_res["top1"] == pytest.approx(torch_res["top1"], abs=0.5)  # at most one near-tie of 200
    assert onnx_res["loss"] == pytest.approx(torch_res["loss"], rel=1e-3) and torch_res["top1"] > 15
    onnx_matrix, torch_matrix = (read_confusion_csv(tmp_path / d / "confusion.csv")[1] for d in ("o", "c"))
    assert int((onnx_matrix - torch_matrix).abs().sum()) <= 2  # the same predictions, but for a near-tie
    assert preprocessing_from_metadata(meta) == preprocessing_for(safe_load(cifar_run))  # for eval --onnx --folder
    code, stdout, _ = run_cli(["eval", out, "--data-dir", DATA, "--limit", "200"], capsys)  # a .onnx positional
    assert code == 0 and stdout.startswith("resnet20 on cifar10 test (200 images): top-1 ")


@needs_cifar
@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_torchscript_and_pt2_of_the_trained_resnet20(cifar_run, cifar_images, fmt, tmp_path, capsys):
    code, stdout, err = run_cli(["export", cifar_run, "-f", fmt, "--data-dir", DATA, *CHECK], capsys)
    assert code == 0, err
    out = cifar_run.with_name("checkpoint" + export_cmd.SUFFIXES[fmt])  # the default name, beside the checkpoint
    assert f"wrote {out} and {out}.json" in stdout
    assert_parity(fmt, out, cifar_run, cifar_images)


# ----------------------------------------------------------------------------- more architectures


def _mobilenet(tmp):
    ckpt = random_checkpoint(tmp / "mnv2.pth.tar", "mobilenetv2", "cifar10", [f"c{i}" for i in range(10)],
                             CIFAR_MEAN, CIFAR_STD, 32)  # fmt: skip
    return ckpt, load_dataset("cifar10", str(DATA), train=False).subset(slice(0, 8)).images, ["--data-dir", DATA]


def _speednet(tmp):
    classes = load_dataset("fashion-mnist", None, train=False).classes
    ckpt = random_checkpoint(tmp / "sn.pth.tar", "speednet_mini", "fashion-mnist", classes, FMNIST_MEAN,
                             FMNIST_STD, 28)  # fmt: skip
    return ckpt, load_dataset("fashion-mnist", None, train=False).subset(slice(0, 8)).center_crop(28).images, []


def _resnet18(tmp, woof):
    train, val = scan_folder(woof)
    cfg = {"data_dir": str(woof), "val_size": 64, "val_resize": 73, "workers": 0}
    ckpt = random_checkpoint(tmp / "r18.pth.tar", "resnet18", "imagenet", train.classes, IMAGENET_MEAN,
                             IMAGENET_STD, 64, cfg)  # fmt: skip
    images = preprocess_images([p for p, _ in val.samples[:8]], preprocessing_for(safe_load(ckpt)))
    return ckpt, images, []


@pytest.fixture(scope="module")
def models(tmp_path_factory, request):
    """name -> (checkpoint, 8 real preprocessed images, extra export arguments), built on first use."""
    tmp, built = tmp_path_factory.mktemp("models"), {}

    def get(name):
        if name not in built:
            if name == "resnet18":
                built[name] = _resnet18(tmp, request.getfixturevalue("woof"))
            else:
                built[name] = {"mobilenetv2": _mobilenet, "speednet_mini": _speednet}[name](tmp)
        return built[name]

    return get


@pytest.mark.parametrize(
    "name,fmt",
    [
        pytest.param("mobilenetv2", "onnx", marks=[needs_cifar, needs_onnx]),
        pytest.param("speednet_mini", "onnx", marks=[needs_fmnist, needs_onnx]),
        pytest.param("speednet_mini", "torchscript", marks=needs_fmnist),
        pytest.param("speednet_mini", "pt2", marks=needs_fmnist),
        pytest.param("resnet18", "onnx", marks=needs_onnx),
    ],  # the three formats of resnet20 are tested above; each export takes seconds
)
def test_parity_across_architectures(models, name, fmt, tmp_path, capsys):
    """Depthwise convolutions (MobileNetV2), a 1-channel model (SpeedNet on Fashion-MNIST), an
    ImageNet-sized model on real photos (ResNet-18 at 64 px on imagewoof-mini)."""
    ckpt, images, extra = models(name)
    out = tmp_path / f"m{export_cmd.SUFFIXES[fmt]}"
    code, stdout, err = run_cli(["export", ckpt, "-f", fmt, "-o", out, *extra, *CHECK], capsys)
    assert code == 0, err
    meta = assert_parity(fmt, out, ckpt, images)
    if name == "speednet_mini":
        assert meta["model_channels"] == meta["input_channels"] == 1 and meta["preprocessing"]["mode"] == "L"
    if name == "resnet18":
        assert meta["preprocessing"]["resize"] == 73 and "imagenet val images" in stdout
        # eval --onnx finds the folder and its preprocessing in the metadata, as eval in the checkpoint
        code, stdout, err = run_cli(["eval", "--onnx", out, "--limit", "40", "-j", "0", "--json"], capsys)
        assert code == 0, err
        onnx_res = json.loads(stdout)
        torch_res = json.loads(run_cli(["eval", ckpt, "--limit", "40", "--amp", "off", "--json"], capsys)[1])
        assert onnx_res["dataset"] == torch_res["dataset"] == "imagenet" and onnx_res["count"] == 40
        assert onnx_res["top1"] == pytest.approx(torch_res["top1"], abs=2.5)  # at most one near-tie of 40
        assert onnx_res["loss"] == pytest.approx(torch_res["loss"], rel=1e-4)


@needs_fmnist
@needs_onnx
def test_gray_data_for_an_rgb_model_as_uint8_or_normalised_input(tmp_path, capsys):
    """resnet20 takes 3 channels; Fashion-MNIST has 1: the graph repeats it. uint8 input (0..255) and
    --no-include-preprocessing (the model's own normalised 3-channel input) are exact too."""
    test = load_dataset("fashion-mnist", None, train=False)
    ckpt = random_checkpoint(tmp_path / "r20.pth.tar", "resnet20", "fashion-mnist", test.classes, FMNIST_MEAN,
                             FMNIST_STD, 28)  # fmt: skip
    images = test.subset(slice(0, 7)).center_crop(28).images
    model, state = load_checkpoint_model(ckpt, torch.device("cpu"), False)
    with torch.no_grad():
        ref = model.eval()(prepare(images, state["mean"], state["std"], False, 3))
    out = tmp_path / "u8.onnx"
    assert run_cli(["export", ckpt, "-f", "onnx", "-o", out, "--input-dtype", "uint8", *CHECK], capsys)[0] == 0
    meta = json.loads(Path(f"{out}.json").read_text())
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["shape"] == ["batch", 1, 28, 28]
    assert meta["model_channels"] == 3 and "repeats the gray channel" in meta["input"]["description"]
    assert torch.allclose(run_file("onnx", out, images), ref, atol=1e-4, rtol=1e-4)
    out = tmp_path / "norm.pt"
    args = ["export", ckpt, "-f", "torchscript", "-o", out, "--no-include-preprocessing", *CHECK]
    assert run_cli(args, capsys)[0] == 0
    meta = json.loads(Path(f"{out}.json").read_text())
    assert not meta["input"]["normalization_in_graph"] and meta["input"]["shape"] == ["batch", 3, 28, 28]
    x = prepare(images, state["mean"], state["std"], False, 3)
    assert torch.allclose(run_file("torchscript", out, x), ref, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- failures


@needs_cifar
def test_image_files_check_an_export_when_the_data_set_is_absent(tmp_path, capsys):
    ckpt = random_checkpoint(tmp_path / "c.pth.tar", "resnet20", "cifar10", [f"c{i}" for i in range(10)],
                             CIFAR_MEAN, CIFAR_STD, 32)  # fmt: skip
    empty = tmp_path / "nodata"
    empty.mkdir()
    code, _, err = run_cli(["export", ckpt, "-f", "torchscript", "--data-dir", empty], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--images" in err
    assert not ckpt.with_name("c.torchscript.pt").exists()
    test = load_dataset("cifar10", str(DATA), train=False).subset(slice(0, 5))
    for i in range(5):
        Image.fromarray(test.images[i].permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    code, stdout, err = run_cli(["export", ckpt, "-f", "torchscript", "--data-dir", empty, "--images",
                                 *sorted(tmp_path.glob("*.png"))], capsys)  # fmt: skip
    assert code == 0, err
    assert "checked on 5 image file(s)" in stdout
    assert_parity("torchscript", ckpt.with_name("c.torchscript.pt"), ckpt, test.images)


def test_missing_export_extra_is_one_line(tmp_path, capsys, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "c.pth.tar", "resnet20", "cifar10", [f"c{i}" for i in range(10)],
                             CIFAR_MEAN, CIFAR_STD, 32)  # fmt: skip
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # import onnxscript now fails
    code, _, err = run_cli(["export", ckpt, "-f", "onnx"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pip install 'torchcls[export]'" in err
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    code, _, err = run_cli(["eval", "--onnx", tmp_path / "m.onnx"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "torchcls[export]" in err
    assert not list(tmp_path.glob("*.onnx*"))


@needs_cifar
def test_a_mismatching_export_fails_and_leaves_no_file(tmp_path, capsys, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "c.pth.tar", "resnet20", "cifar10", [f"c{i}" for i in range(10)],
                             CIFAR_MEAN, CIFAR_STD, 32)  # fmt: skip
    real = export_cmd.load_export

    def corrupted(fmt, path):  # an exporter bug: every logit off by 1% of the logit scale
        run = real(fmt, path)
        return lambda x: run(x) * 1.01 + 0.01

    monkeypatch.setattr(export_cmd, "load_export", corrupted)
    out = tmp_path / "bad.pt"
    code, stdout, err = run_cli(["export", ckpt, "-f", "torchscript", "-o", out, "--data-dir", DATA, *CHECK], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "does not match PyTorch" in err and "max |logit difference|" in err and "was not written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth.tar"]  # no file, no sidecar, no temporary
