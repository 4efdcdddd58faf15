"""The model zoo: exact parameter counts (the reference implementations'), shapes, gradients."""

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torchvision

from torchcls.errors import UserError
from torchcls.models import create_model, get_entry, list_models
from torchcls.models.imagenet.pretrained import load_pretrained
from torchcls.models.imagenet.resnext import resnet18
from torchcls.models.imagenet.torchvision_models import default_weights_file
from torchcls.models.weights import clean_state_dict, load_model_weights, safe_torch_load

# name -> parameter count with num_classes=10 (the table of issue 2)
CIFAR_COUNTS = {
    "alexnet": 2_472_266,
    "vgg16": 14_719_818,
    "vgg19_bn": 20_040_522,
    "resnet20": 272_474,
    "resnet56": 855_770,
    "resnet110": 1_730_714,
    "resnet1202": 19_424_026,
    "resnet164": 1_704_154,
    "preresnet110": 1_730_522,
    "preresnet164": 1_703_258,
    "wrn28_10": 36_479_194,
    "resnext29_8x64d": 34_426_698,
    "resnext29_16x64d": 68_155_210,
    "densenet_bc_100_12": 769_162,
    "densenet_bc_190_40": 25_624_430,
    "mobilenet": 3_217_226,
    "mobilenetv2": 2_296_922,
    "shufflenetv2": 1_263_854,
    "pnasnet_a": 130_646,
    "pnasnet_b": 451_626,
}
IMAGENET_COUNTS = {"resnet18": 11_689_512, "resnext50_32x4d": 25_028_904}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def classifier_in_features(model: nn.Module, num_classes: int) -> int:
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    assert heads, "no Linear head with out_features == num_classes"
    return heads[-1].in_features


def test_every_table_row_is_registered():
    names = set(list_models(dataset="cifar"))
    assert set(CIFAR_COUNTS) <= names
    assert set(IMAGENET_COUNTS) <= set(list_models(dataset="imagenet"))
    assert "pnasnet" in list_models(dataset="cifar", include_aliases=True)
    assert get_entry("pnasnet").name == "pnasnet_b"


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", sorted(CIFAR_COUNTS))
def test_cifar_model(name, num_classes):
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes)
    count = n_params(model)
    if num_classes == 10:
        assert count == CIFAR_COUNTS[name]
    else:  # only the head grows: (in_features + 1) weights for each extra class
        extra = (classifier_in_features(model, num_classes) + 1) * (num_classes - 10)
        assert count == CIFAR_COUNTS[name] + extra
    model.train()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    out.float().logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", sorted(IMAGENET_COUNTS))
def test_imagenet_model(name):
    model = create_model(name, num_classes=1000)
    assert n_params(model) == IMAGENET_COUNTS[name]
    model.eval()
    with torch.no_grad():
        out = create_model(name, num_classes=7).eval()(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 7)


def test_resnext50_matches_torchvision_layout():
    ours = create_model("resnext50_32x4d", num_classes=1000)
    ref = torchvision.models.resnext50_32x4d()
    assert n_params(ours) == n_params(ref)


def test_torchvision_namespace():
    names = list_models(dataset="imagenet")
    for tv in ("tv_resnet50", "tv_efficientnet_b0", "tv_vit_b_16", "tv_mobilenet_v3_small"):
        assert tv in names
    m = create_model("tv_mobilenet_v3_small", num_classes=5)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)


def test_torchvision_matplotlib_and_tensorboard_are_imported_only_when_used():
    """A fresh process: the command line and torchcls's own models import none of the three (each
    takes seconds to import); a tv_* name still finds torchvision's model, registered on demand."""
    code = (
        "import sys\n"
        "from torchcls.cli import build_parser\n"
        "from torchcls.models import create_model, list_models\n"
        "build_parser().parse_args(['train'])\n"
        "create_model('speednet_mini', in_channels=1); create_model('resnet20'); create_model('resnet18')\n"
        "heavy = ('torchvision', 'matplotlib', 'tensorboard')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(create_model('tv_resnet18', num_classes=3).fc.out_features, 'torchvision' in sys.modules)\n"
        "print('tv_resnet50' in list_models())\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.splitlines() == ["[]", "3 True", "True"], p.stdout


@pytest.mark.parametrize(
    "family,kwargs,rule",
    [
        ("resnet", dict(depth=21), "6n+2"),
        ("resnet", dict(depth=21, block_name="Bottleneck"), "9n+2"),
        ("preresnet", dict(depth=100), "6n+2"),
        ("wrn", dict(depth=27, widen_factor=10), "6n+4"),
        ("densenet", dict(depth=101, growth_rate=12), "6n+4"),
        ("resnext", dict(depth=30, cardinality=8), "9n+2"),
    ],
)
def test_depth_rule_errors(family, kwargs, rule):
    with pytest.raises(ValueError) as err:
        create_model(family, num_classes=10, **kwargs)
    msg = str(err.value)
    assert rule in msg and "nearest valid" in msg


def test_depth_error_names_neighbours():
    with pytest.raises(ValueError, match=r"nearest valid: 20 or 26"):
        create_model("resnet", depth=21)


@pytest.mark.parametrize(
    "family,kwargs,equals",
    [
        ("resnet", dict(depth=110), "resnet110"),
        ("resnet", dict(depth=164, block_name="Bottleneck"), "resnet164"),
        ("preresnet", dict(depth=110), "preresnet110"),
        ("wrn", dict(depth=28, widen_factor=10, drop_rate=0.3), "wrn28_10"),
        ("resnext", dict(depth=29, cardinality=16, widen_factor=4), "resnext29_16x64d"),
        ("densenet", dict(depth=100, growth_rate=12, compression_rate=2), "densenet_bc_100_12"),
    ],
)
def test_family_builders_match_rows(family, kwargs, equals):
    assert n_params(create_model(family, **kwargs)) == CIFAR_COUNTS[equals]


def test_unknown_model_and_kwarg():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="does not take"):
        create_model("resnet20", widen_factor=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20", num_classes=0)


def test_default_class_count_is_the_entrys_imagenet_1000_cifar_10():
    model = create_model("resnet18")  # ImageNet-sized: torchvision's 1,000 classes and parameter count
    assert model.fc.out_features == 1000 and n_params(model) == 11_689_512
    assert n_params(model) == n_params(torchvision.models.resnet18())
    assert n_params(resnet18()) == 11_689_512  # the builder called directly agrees
    assert create_model("resnet20").fc.out_features == 10  # CIFAR-sized: 10
    assert n_params(create_model("resnet20")) == CIFAR_COUNTS["resnet20"]
    assert get_entry("resnet18").num_classes == 1000 and get_entry("resnet20").num_classes == 10


def test_explicit_num_classes_wins_over_the_default():
    assert create_model("resnet18", num_classes=10).fc.out_features == 10
    assert create_model("resnet20", num_classes=1000).fc.out_features == 1000
    assert create_model("resnet18", num_classes=None).fc.out_features == 1000


@pytest.mark.parametrize("bad", [0, -3, 2.0, "10", True])
def test_invalid_num_classes_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        create_model("resnet18", num_classes=bad)


def test_every_builders_own_default_is_its_entrys():
    """Called directly (resnet18()), a builder gives the class count create_model gives."""
    for name in list_models(include_families=True):
        entry = get_entry(name)
        default = inspect.signature(entry.fn).parameters["num_classes"].default
        assert default == entry.num_classes == {"cifar": 10, "imagenet": 1000}[entry.dataset], name


class _Payload:
    def __reduce__(self):
        return os.getcwd, ()


def test_weights_load_safely_strip_prefixes_and_name_misfits(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4))
    state = {f"module._orig_mod.{k}": v for k, v in net.state_dict().items()}
    assert list(clean_state_dict(state)) == ["0.weight", "0.bias"]
    torch.save(state, tmp_path / "w.pt")
    other = nn.Sequential(nn.Linear(3, 4))
    load_model_weights(other, safe_torch_load(tmp_path / "w.pt"), "w.pt")
    assert torch.equal(other[0].weight, net[0].weight)
    with pytest.raises(UserError, match="w.pt does not fit this model: 0.weight has shape"):
        load_model_weights(nn.Sequential(nn.Linear(3, 5)), state, "w.pt")
    with pytest.raises(UserError, match="missing"):
        load_model_weights(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4)), state, "w.pt")
    torch.save({"x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="was refused.*getcwd") as err:
        safe_torch_load(tmp_path / "evil.pt", "weights file")
    assert "weights_only" not in str(err.value)  # torch's advice to turn the check off is not passed on
    (tmp_path / "cut.pt").write_bytes((tmp_path / "w.pt").read_bytes()[:40])
    with pytest.raises(UserError, match="cut.pt is unreadable"):
        safe_torch_load(tmp_path / "cut.pt")


def test_pretrained_resnet18_from_the_cache_keeps_or_replaces_the_head(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = Path(default_weights_file("resnet18"))
    path.parent.mkdir(parents=True)
    ref = torchvision.models.resnet18().state_dict()
    torch.save(ref, path)
    model = create_model("resnet18")
    assert load_pretrained(model, "resnet18", {}, 1000) == str(path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in ref.items())
    model = create_model("resnet18", num_classes=7)
    load_pretrained(model, "resnet18", {}, 7)
    assert model.fc.out_features == 7 and torch.equal(model.conv1.weight, ref["conv1.weight"])
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="--pretrained: torchvision's weights file .* is unreadable"):
        load_pretrained(create_model("resnet18"), "resnet18", {}, 1000)
