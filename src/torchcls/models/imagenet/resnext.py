"""ResNet and ResNeXt for ImageNet-sized (224x224) inputs.

ResNet (He et al., 2016, "Deep Residual Learning for Image Recognition") and ResNeXt
(Xie et al., 2017, "Aggregated Residual Transformations for Deep Neural Networks") share
one body: a 7x7 stride-2 stem and a 3x3 max-pool, four stages of residual blocks at 64,
128, 256 and 512 "planes" (the first block of stages 2-4 has stride 2), global average
pooling and a Linear head. A ResNeXt bottleneck makes its 3x3 convolution a grouped one,
with `cardinality` groups of `base_width` channels at 64 planes; ResNet is the case of
one group of 64 channels.

Module and parameter names follow torchvision's (conv1, bn1, layer1..layer4, fc,
downsample.0/1), so a torchvision state_dict loads into these models unchanged.

Fixed entries: resnet18/34/50/101/152, resnext50_32x4d, resnext101_32x8d,
resnext101_64x4d. Family builders resnext50/resnext101/resnext152 take the original
`--base-width` and `--cardinality` flags (defaults 4 and 32).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from torchcls.models.registry import register_model

# depth -> (block kind, blocks per stage)
LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("resnet: the basic block supports only cardinality 1 and base width 64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (grouped for ResNeXt, stride here) -> 1x1 expand (x4)."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(nn.Module):
    """ResNet / ResNeXt body. `cardinality` groups of `base_width` channels (at 64 planes)."""

    def __init__(
        self,
        depth: int = 50,
        cardinality: int = 1,
        base_width: int = 64,
        num_classes: int = 1000,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(
                f"resnet/resnext (ImageNet): depth must be one of {', '.join(map(str, LAYOUTS))}, got {depth!r}"
            )
        for flag, value in (("cardinality", cardinality), ("base_width", base_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"resnext (ImageNet): {flag} must be an integer >= 1, got {value!r}")
        kind, layers = LAYOUTS[depth]
        block = BLOCKS[kind]
        self.groups = cardinality
        self.base_width = base_width
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each residual branch starts as zero: the block is the identity
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [
            block(self.inplanes, planes, groups=self.groups, base_width=self.base_width) for _ in range(1, blocks)
        ]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# --- ResNet: fixed entries --------------------------------------------------------------


@register_model(family="resnet", dataset="imagenet")
def resnet18(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-18 (basic blocks 2-2-2-2), 224x224 inputs."""
    return ResNet(18, num_classes=num_classes, zero_init_residual=zero_init_residual)


@register_model(family="resnet", dataset="imagenet")
def resnet34(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-34 (basic blocks 3-4-6-3), 224x224 inputs."""
    return ResNet(34, num_classes=num_classes, zero_init_residual=zero_init_residual)


@register_model(family="resnet", dataset="imagenet")
def resnet50(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-50 (bottlenecks 3-4-6-3), 224x224 inputs."""
    return ResNet(50, num_classes=num_classes, zero_init_residual=zero_init_residual)


@register_model(family="resnet", dataset="imagenet")
def resnet101(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-101 (bottlenecks 3-4-23-3), 224x224 inputs."""
    return ResNet(101, num_classes=num_classes, zero_init_residual=zero_init_residual)


@register_model(family="resnet", dataset="imagenet")
def resnet152(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-152 (bottlenecks 3-8-36-3), 224x224 inputs."""
    return ResNet(152, num_classes=num_classes, zero_init_residual=zero_init_residual)


# --- ResNeXt: family builders (the original's --base-width / --cardinality flags) --------


@register_model(family="resnext", dataset="imagenet", is_family=True)
def resnext50(
    num_classes: int = 1000, base_width: int = 4, cardinality: int = 32, zero_init_residual: bool = False
) -> nn.Module:
    """ResNeXt-50 (3-4-6-3) with `cardinality` groups of `base_width` channels."""
    return ResNet(50, cardinality, base_width, num_classes, zero_init_residual)


@register_model(family="resnext", dataset="imagenet", is_family=True)
def resnext101(
    num_classes: int = 1000, base_width: int = 4, cardinality: int = 32, zero_init_residual: bool = False
) -> nn.Module:
    """ResNeXt-101 (3-4-23-3) with `cardinality` groups of `base_width` channels."""
    return ResNet(101, cardinality, base_width, num_classes, zero_init_residual)


@register_model(family="resnext", dataset="imagenet", is_family=True)
def resnext152(
    num_classes: int = 1000, base_width: int = 4, cardinality: int = 32, zero_init_residual: bool = False
) -> nn.Module:
    """ResNeXt-152 (3-8-36-3) with `cardinality` groups of `base_width` channels."""
    return ResNet(152, cardinality, base_width, num_classes, zero_init_residual)


# --- ResNeXt: fixed entries (torchvision's names) ---------------------------------------


@register_model(family="resnext", dataset="imagenet")
def resnext50_32x4d(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """ResNeXt-50, 32 groups of 4 channels."""
    return ResNet(50, 32, 4, num_classes, zero_init_residual)


@register_model(family="resnext", dataset="imagenet")
def resnext101_32x8d(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """ResNeXt-101, 32 groups of 8 channels."""
    return ResNet(101, 32, 8, num_classes, zero_init_residual)


@register_model(family="resnext", dataset="imagenet")
def resnext101_64x4d(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """ResNeXt-101, 64 groups of 4 channels."""
    return ResNet(101, 64, 4, num_classes, zero_init_residual)
