"""The recipes of the original's results table (recipes/original/): one per row and data set, each the
original's own command, each building the network the row's published parameter count describes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from torchcls.cli import build_parser, main
from torchcls.commands.train import config_from_args
from torchcls.config import build_config, find_recipe, list_recipes, load_recipe
from torchcls.errors import UserError
from torchcls.models import create_model
from torchcls.report.original import ROWS, ROWS_BY_KEY, all_recipes

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "original-project.md"
ORIGINAL = [(r, ds, r.recipe(ds)) for r in ROWS for ds in r.datasets]
# rows TRAINING.md gives no command for, and the command their recipe stands for (documented in the
# recipe and in the row's note): the nearest row's command, or cifar.py's defaults
SUBSTITUTES = {
    "vgg16": "-a vgg16 --epochs 164 --schedule 81 122 --gamma 0.1",
    "resnet20": "-a resnet --depth 20 --epochs 164 --schedule 81 122 --gamma 0.1 --wd 1e-4",
    "resnet56": "-a resnet --depth 56 --epochs 164 --schedule 81 122 --gamma 0.1 --wd 1e-4",
    "mobilenet": "-a mobilenet",
    "mobilenetv2": "-a mobilenetv2",
    "shufflenetv2": "-a shufflenetv2",
    "pnasnet": "-a pnasnet",
}
# what may differ between a recipe and the command it stands for
FREE = {"recipe", "checkpoint", "seed", "data_dir"}
NUM = r"\d+(?:\.\d+)?"


def parse(cmd: str):
    return config_from_args(build_parser().parse_args(["train", *shlex.split(cmd)]))


def n_params(cfg) -> int:
    num_classes = 1000 if cfg.dataset == "imagenet" else 10  # the table counts CIFAR models at 10 classes
    with torch.device("meta"):  # no memory, no initialisation: ResNeXt-29 16x64d is 68 M parameters
        model = create_model(cfg.arch, num_classes=num_classes, **cfg.model_kwargs())
    return sum(p.numel() for p in model.parameters())


def test_one_original_recipe_per_row_and_data_set():
    names = {name for name, _ in list_recipes()}
    wanted = {name for _, _, name in ORIGINAL}
    assert len(wanted) == 17 * 2 + 2
    assert wanted <= names
    assert {n for n in names if n.startswith("original/")} == wanted  # no stray files either
    for _, _, name in all_recipes():  # the faster recipes a row names exist too
        assert name in names, name


@pytest.mark.parametrize("row,dataset,name", ORIGINAL, ids=[n for _, _, n in ORIGINAL])
def test_original_recipe_is_the_original_command(row, dataset, name):
    cfg = build_config({}, recipe=name)
    assert (cfg.recipe, cfg.dataset, cfg.lr_schedule) == (name, dataset, "step")
    command = row.command or SUBSTITUTES[row.key]
    command = command.replace("--data ~/dataset/ILSVRC2012/ ", "")
    if row.key in ("resnet110", "preresnet110"):  # the published network: see the row's note
        command = command.replace("--depth 110", "--depth 164 --block-name Bottleneck")
    want = parse(f"{command} --dataset {dataset}")
    got, expected = cfg.to_dict(), want.to_dict()
    diff = {k: (got[k], expected[k]) for k in got if k not in FREE and got[k] != expected[k]}
    assert not diff, f"{name} differs from `{command}` in (recipe, command): {diff}"
    assert cfg.checkpoint.startswith(f"checkpoints/{dataset}/")  # the original's folder layout
    description = dict(list_recipes())[name]
    assert row.label in description and row.original[dataset] in description
    assert "not yet run" in description or "reached" in description


@pytest.mark.parametrize("row", [r for r in ROWS if r.params], ids=lambda r: r.key)
def test_parameter_count_is_the_tables(row):
    cfg = build_config({}, recipe=row.recipe(row.datasets[0]))
    assert f"{n_params(cfg) / 1e6:.2f}M" == row.params


def test_the_110_rows_are_the_164_layer_bottleneck_networks():
    # `-a resnet --depth 110` is the real 110-layer network (1.73M): not the published row's 1.70M
    assert f"{n_params(parse('-a resnet --depth 110')) / 1e6:.2f}M" == "1.73M"
    for key in ("resnet110", "preresnet110"):
        cfg = build_config({}, recipe=f"original/cifar10-{key}")
        assert (cfg.depth, cfg.block_name) == (164, "Bottleneck")


def test_recipe_names_with_a_folder(capsys):
    path = find_recipe("original/cifar10-resnet110")
    assert path.name == "cifar10-resnet110.yaml"
    assert load_recipe("original/cifar10-resnet110")["depth"] == 164
    with pytest.raises(UserError, match="unknown recipe 'original/cifar10-resnet111'.*original/cifar10-resnet110"):
        find_recipe("original/cifar10-resnet111")
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^original/cifar100-densenet-bc-190-40 +DenseNet-BC", out, re.M)
    # the command line takes them, and flags still win
    cfg = parse("--recipe original/cifar100-wrn28-10-drop --epochs 3 --schedule 1 2")
    assert (cfg.arch, cfg.depth, cfg.widen_factor, cfg.drop_rate, cfg.gamma, cfg.epochs) == ("wrn", 28, 10, 0.3, 0.2, 3)


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"{REFERENCE} not found (the original project's facts)")
def test_rows_match_the_reference():
    """The commands and figures typed into report/original.py are the reference's, character for character."""
    text = REFERENCE.read_text()
    commands = set()
    for line in text.splitlines():
        m = re.match(r"^(cifar|imagenet)\.py (.*?) (?:--checkpoint|-c) \S+$", line.strip())
        if m:
            commands.add(m.group(2))
    assert len(commands) == 12
    assert {r.command for r in ROWS if r.command} == commands
    table = text[text.index("## Its results table") :]
    for key, label in (
        ("alexnet", "alexnet"),
        ("vgg16", "vgg16"),
        ("vgg19_bn", "vgg19_bn"),
        ("resnet20", "ResNet-20"),
        ("resnet56", "ResNet-56"),
        ("resnet110", "ResNet-110"),
        ("resnet1202", "ResNet-1202"),
        ("preresnet110", "PreResNet-110"),
        ("wrn28-10-drop", "WRN-28-10 drop 0.3"),
        ("resnext29-8x64d", "ResNeXt-29 8x64"),
        ("resnext29-16x64d", "ResNeXt-29 16x64"),
        ("densenet-bc-100-12", "DenseNet-BC L=100 k=12"),
        ("densenet-bc-190-40", "DenseNet-BC L=190 k=40"),
        ("mobilenet", "MobileNet"),
        ("mobilenetv2", "MobileNetV2"),
        ("shufflenetv2", "ShuffleNetV2"),
        ("pnasnet", "PNASNet"),
    ):
        row = ROWS_BY_KEY[key]
        m = re.search(rf"(?:^|· ){re.escape(label)} ({NUM}) / ({NUM})(?: \(({NUM}M)\))?", table, re.M)
        assert m, label
        assert (m.group(1), m.group(2), m.group(3)) == (row.original["cifar10"], row.original["cifar100"], row.params)
    for key, label in (("resnet18", "ResNet-18"), ("resnext50-32x4d", "ResNeXt-50 32x4d")):
        row = ROWS_BY_KEY[key]
        m = re.search(rf"{re.escape(label)} ({NUM}) / ({NUM}) \(({NUM}M)\)", table)
        assert (m.group(1), m.group(2), m.group(3)) == (row.original["imagenet"], row.imagenet_top5, row.params)
