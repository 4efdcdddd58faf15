"""The model zoo: exact parameter counts (the reference implementations'), shapes, gradients."""

import pytest
import torch
import torch.nn as nn

from torchcls.models import create_model, get_entry, list_models

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
    import torchvision

    ours = create_model("resnext50_32x4d", num_classes=1000)
    ref = torchvision.models.resnext50_32x4d()
    assert n_params(ours) == n_params(ref)


def test_torchvision_namespace():
    names = list_models(dataset="imagenet")
    for tv in ("tv_resnet50", "tv_efficientnet_b0", "tv_vit_b_16", "tv_mobilenet_v3_small"):
        assert tv in names
    m = create_model("tv_mobilenet_v3_small", num_classes=5)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize("family,kwargs,rule", [
    ("resnet", dict(depth=21), "6n+2"),
    ("resnet", dict(depth=21, block_name="Bottleneck"), "9n+2"),
    ("preresnet", dict(depth=100), "6n+2"),
    ("wrn", dict(depth=27, widen_factor=10), "6n+4"),
    ("densenet", dict(depth=101, growth_rate=12), "6n+4"),
    ("resnext", dict(depth=30, cardinality=8), "9n+2"),
])
def test_depth_rule_errors(family, kwargs, rule):
    with pytest.raises(ValueError) as err:
        create_model(family, num_classes=10, **kwargs)
    msg = str(err.value)
    assert rule in msg and "nearest valid" in msg


def test_depth_error_names_neighbours():
    with pytest.raises(ValueError, match=r"nearest valid: 20 or 26"):
        create_model("resnet", depth=21)


@pytest.mark.parametrize("family,kwargs,equals", [
    ("resnet", dict(depth=110), "resnet110"),
    ("resnet", dict(depth=164, block_name="Bottleneck"), "resnet164"),
    ("preresnet", dict(depth=110), "preresnet110"),
    ("wrn", dict(depth=28, widen_factor=10, drop_rate=0.3), "wrn28_10"),
    ("resnext", dict(depth=29, cardinality=16, widen_factor=4), "resnext29_16x64d"),
    ("densenet", dict(depth=100, growth_rate=12, compression_rate=2), "densenet_bc_100_12"),
])
def test_family_builders_match_rows(family, kwargs, equals):
    assert n_params(create_model(family, **kwargs)) == CIFAR_COUNTS[equals]


def test_unknown_model_and_kwarg():
    with pytest.raises(ValueError, match="unknown model"):
        create_model("resnet21")
    with pytest.raises(ValueError, match="does not take"):
        create_model("resnet20", widen_factor=3)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("resnet20", num_classes=0)
