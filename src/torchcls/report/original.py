"""The original pytorch-classification results table, as data: one `Row` per line of its README.

Each row names the original's published figures (top-1 accuracy in %, CIFAR-10 and CIFAR-100; for
ImageNet top-1 / top-5 error in %), its parameter count where the table gives one (as it prints it,
e.g. "1.70M"; counted on CIFAR-10), and the recipes that train it here: `original/<data set>-<key>`
with the original's own command, and faster ones where torchcls has them. `torchcls results`
renders this table beside our measured runs (docs/results/*.json and run folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field

CIFAR = ("cifar10", "cifar100")


@dataclass(frozen=True)
class Row:
    key: str  # the recipe names' row part: original/cifar10-<key>
    label: str  # as the original's table names it
    # data set -> the published figure as printed: top-1 accuracy (%); ImageNet: top-1 error (%)
    original: dict[str, str]
    params: str | None = None  # the original's parameter count as printed ("1.70M"), None where not given
    # the TRAINING.md command (cifar.py / imagenet.py flags, as `torchcls train` takes them), None when
    # TRAINING.md has none for this row; the CIFAR-100 one adds --dataset cifar100
    command: str | None = None
    # data set -> recipes faster than the original's schedule that aim at the same figure
    fast: dict[str, tuple[str, ...]] = field(default_factory=dict)
    imagenet_top5: str | None = None  # ImageNet rows: the published top-5 error (%), as printed
    note: str = ""

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self.original)

    def recipe(self, dataset: str) -> str:
        """The recipe with the original's own settings for this row on `dataset`."""
        return f"original/{dataset}-{self.key}"

    def recipes(self, dataset: str) -> tuple[str, ...]:
        return (self.recipe(dataset), *self.fast.get(dataset, ()))

    def original_accuracy(self, dataset: str) -> float:
        """The published figure as top-1 accuracy in % (ImageNet's error turned into accuracy)."""
        v = float(self.original[dataset])
        return 100.0 - v if dataset == "imagenet" else v


_164 = "--epochs 164 --schedule 81 122 --gamma 0.1"

ROWS: tuple[Row, ...] = (
    Row(
        "alexnet",
        "AlexNet",
        {"cifar10": "74.09", "cifar100": "38.11"},
        "2.47M",
        f"-a alexnet {_164}",
        fast={"cifar10": ("cifar10-alexnet-30ep",)},
    ),
    Row(
        "vgg16",
        "VGG-16",
        {"cifar10": "89.83", "cifar100": "54.89"},
        None,
        None,
        note="no TRAINING.md command: vgg19_bn's (164 epochs, 81 122, gamma 0.1) with -a vgg16",
    ),
    Row("vgg19_bn", "VGG-19 (BN)", {"cifar10": "92.80", "cifar100": "71.89"}, "20.04M", f"-a vgg19_bn {_164}"),
    Row(
        "resnet20",
        "ResNet-20",
        {"cifar10": "91.70", "cifar100": "67.47"},
        None,
        None,
        fast={"cifar10": ("cifar10-resnet20", "cifar10-resnet20-40ep", "cifar10-resnet20-60ep")},
        note="no TRAINING.md command: ResNet-110's with --depth 20",
    ),
    Row(
        "resnet56",
        "ResNet-56",
        {"cifar10": "92.88", "cifar100": "70.86"},
        None,
        None,
        fast={"cifar10": ("cifar10-resnet56-20ep", "cifar10-resnet56-40ep", "cifar10-resnet56-60ep")},
        note="no TRAINING.md command: ResNet-110's with --depth 56",
    ),
    Row(
        "resnet110",
        "ResNet-110",
        {"cifar10": "91.54", "cifar100": "72.20"},
        "1.70M",
        f"-a resnet --depth 110 {_164} --wd 1e-4",
        note="the published row and its 1.70M are ResNet-164 (Bottleneck, n=18), which --depth 110 built before "
        "January 2019; the recipe builds that network (--depth 164 --block-name Bottleneck)",
    ),
    Row(
        "resnet1202",
        "ResNet-1202",
        {"cifar10": "91.80", "cifar100": "66.63"},
        None,
        f"-a resnet --depth 1202 {_164} --wd 1e-4",
    ),
    Row(
        "preresnet110",
        "PreResNet-110",
        {"cifar10": "93.89", "cifar100": "72.65"},
        "1.70M",
        f"-a preresnet --depth 110 {_164} --wd 1e-4",
        note="as ResNet-110: the published network is PreResNet-164 (Bottleneck, n=18)",
    ),
    Row(
        "wrn28-10-drop",
        "WRN-28-10 (drop 0.3)",
        {"cifar10": "94.25", "cifar100": "77.77"},
        "36.48M",
        "-a wrn --depth 28 --depth 28 --widen-factor 10 --drop 0.3 --epochs 200 --schedule 60 120 160 --wd 5e-4 "
        "--gamma 0.2",
    ),
    Row(
        "resnext29-8x64d",
        "ResNeXt-29 (8x64d)",
        {"cifar10": "96.08", "cifar100": "81.48"},
        "34.43M",
        "-a resnext --depth 29 --cardinality 8 --widen-factor 4 --schedule 150 225 --wd 5e-4 --gamma 0.1",
    ),
    Row(
        "resnext29-16x64d",
        "ResNeXt-29 (16x64d)",
        {"cifar10": "95.50", "cifar100": "81.11"},
        "68.16M",
        "-a resnext --depth 29 --cardinality 16 --widen-factor 4 --schedule 150 225 --wd 5e-4 --gamma 0.1",
    ),
    Row(
        "densenet-bc-100-12",
        "DenseNet-BC (L=100, k=12)",
        {"cifar10": "95.02", "cifar100": "77.17"},
        "0.77M",
        "-a densenet --depth 100 --growthRate 12 --train-batch 64 --epochs 300 --schedule 150 225 --wd 1e-4 "
        "--gamma 0.1",
    ),
    Row(
        "densenet-bc-190-40",
        "DenseNet-BC (L=190, k=40)",
        {"cifar10": "96.29", "cifar100": "72.05"},
        "25.62M",
        "-a densenet --depth 190 --growthRate 40 --train-batch 64 --epochs 300 --schedule 150 225 --wd 1e-4 "
        "--gamma 0.1",
    ),
    Row(
        "mobilenet",
        "MobileNet",
        {"cifar10": "92.00", "cifar100": "67.6"},
        None,
        None,
        note="no TRAINING.md command: cifar.py's defaults",
    ),
    Row(
        "mobilenetv2",
        "MobileNetV2",
        {"cifar10": "93.90", "cifar100": "75.61"},
        None,
        None,
        note="no TRAINING.md command: cifar.py's defaults",
    ),
    Row(
        "shufflenetv2",
        "ShuffleNetV2",
        {"cifar10": "92.83", "cifar100": "72.3"},
        None,
        None,
        note="no TRAINING.md command: cifar.py's defaults",
    ),
    Row(
        "pnasnet",
        "PNASNet",
        {"cifar10": "82.34", "cifar100": "53.79"},
        None,
        None,
        note="no TRAINING.md command: cifar.py's defaults; -a pnasnet is PNASNet-B",
    ),
    Row(
        "resnet18",
        "ResNet-18",
        {"imagenet": "30.09"},
        "11.69M",
        "-a resnet18 --data ~/dataset/ILSVRC2012/ --epochs 90 --schedule 31 61 --gamma 0.1",
        imagenet_top5="10.78",
    ),
    Row(
        "resnext50-32x4d",
        "ResNeXt-50 (32x4d)",
        {"imagenet": "22.6"},
        "25.03M",
        "-a resnext50 --base-width 4 --cardinality 32 --data ~/dataset/ILSVRC2012/ --epochs 90 --schedule 31 61 "
        "--gamma 0.1",
        imagenet_top5="6.29",
    ),
)

ROWS_BY_KEY = {r.key: r for r in ROWS}


def all_recipes() -> list[tuple[Row, str, str]]:
    """(row, data set, recipe) for every recipe of every row, in table order."""
    return [(r, ds, name) for r in ROWS for ds in r.datasets for name in r.recipes(ds)]


def row_of_recipe(recipe: str | None) -> tuple[Row, str] | None:
    """The (row, data set) a recipe name trains, None for a recipe of no row."""
    for r, ds, name in all_recipes():
        if name == recipe:
            return r, ds
    return None
