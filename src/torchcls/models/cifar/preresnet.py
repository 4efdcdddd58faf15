"""Pre-activation ResNet for CIFAR (He et al., 2016, "Identity Mappings in Deep Residual Networks").

The same 6n+2 / 9n+2 layout as the CIFAR ResNet (stem of 16 filters, stages of 16/32/64
filters), but each block is "full pre-activation": BN-ReLU-conv, BN-ReLU-conv, with
nothing after the addition, so the shortcut path stays a clean identity. The shortcut
projection where the shape changes is a bare 1x1 convolution (it reads the block's
pre-activated input), and a final BN-ReLU precedes the global pooling.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from torchcls.models.cifar._layers import check_int_depth, conv1x1, conv3x3, init_weights, pick_block
from torchcls.models.registry import check_depth, register_model


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The 1x1 conv shortcut where the block changes shape; None (identity) otherwise."""
    if stride == 1 and in_planes == out_planes:
        return None
    return conv1x1(in_planes, out_planes, stride)


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus the shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        # a projection shortcut sees the pre-activated input; an identity one sees x itself
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class PreActBottleneck(nn.Module):
    """BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1(x4), plus the shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + identity


BLOCKS = {"BasicBlock": PreActBasicBlock, "Bottleneck": PreActBottleneck}
# block -> (depth rule, layers per block, validity test)
DEPTH_RULES = {
    PreActBasicBlock: ("6n+2", 6, lambda d: d >= 8 and (d - 2) % 6 == 0),
    PreActBottleneck: ("9n+2", 9, lambda d: d >= 11 and (d - 2) % 9 == 0),
}


class PreResNet(nn.Module):
    def __init__(self, depth: int = 20, block_name: str = "BasicBlock", num_classes: int = 10):
        super().__init__()
        block = pick_block("preresnet", block_name, BLOCKS)
        rule, per_block, valid = DEPTH_RULES[block]
        check_int_depth("preresnet", depth)
        check_depth("preresnet", depth, rule, valid)
        n = (depth - 2) // per_block

        self.in_planes = 16
        self.conv1 = conv3x3(3, 16)
        self.layer1 = self._make_stage(block, 16, n, stride=1)  # 32x32
        self.layer2 = self._make_stage(block, 32, n, stride=2)  # 16x16
        self.layer3 = self._make_stage(block, 64, n, stride=2)  # 8x8
        self.bn = nn.BatchNorm2d(64 * block.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64 * block.expansion, num_classes)
        init_weights(self)

    def _make_stage(self, block: type, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(n):
            layers.append(block(self.in_planes, planes, stride if i == 0 else 1))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.bn(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model(family="preresnet", dataset="cifar", is_family=True)
def preresnet(num_classes: int = 10, depth: int = 20, block_name: str = "BasicBlock") -> nn.Module:
    """CIFAR pre-activation ResNet of any depth: 6n+2 with BasicBlock, 9n+2 with Bottleneck."""
    return PreResNet(depth=depth, block_name=block_name, num_classes=num_classes)


@register_model(family="preresnet", dataset="cifar")
def preresnet20(num_classes: int = 10) -> nn.Module:
    """PreResNet-20 (BasicBlock, n=3)."""
    return PreResNet(20, "BasicBlock", num_classes)


@register_model(family="preresnet", dataset="cifar")
def preresnet56(num_classes: int = 10) -> nn.Module:
    """PreResNet-56 (BasicBlock, n=9)."""
    return PreResNet(56, "BasicBlock", num_classes)


@register_model(family="preresnet", dataset="cifar")
def preresnet110(num_classes: int = 10) -> nn.Module:
    """PreResNet-110 (BasicBlock, n=18)."""
    return PreResNet(110, "BasicBlock", num_classes)


@register_model(family="preresnet", dataset="cifar")
def preresnet164(num_classes: int = 10) -> nn.Module:
    """PreResNet-164 (Bottleneck, n=18)."""
    return PreResNet(164, "Bottleneck", num_classes)
