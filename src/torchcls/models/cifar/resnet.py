"""ResNet for CIFAR (He et al., 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2).

A 3x3 stem with 16 filters, then three stages of n residual blocks on 32x32, 16x16 and
8x8 maps with 16, 32 and 64 filters; global average pooling and a linear classifier.
With BasicBlocks (two 3x3 convs) the network has 6n+2 weighted layers (ResNet-20/32/44/
56/110/1202); with Bottleneck blocks (1x1, 3x3, 1x1, expansion 4) it has 9n+2 (ResNet-164).
Where a block changes the shape, the shortcut is a 1x1 convolution + BN projection.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from torchcls.models.cifar._layers import check_int_depth, conv1x1, conv3x3, init_weights, pick_block
from torchcls.models.registry import check_depth, register_model


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, added to the shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, out_planes)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(x4)-BN, added to the shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def projection(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """The 1x1 conv + BN shortcut where the block changes shape; None (identity) otherwise."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


BLOCKS = {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck}
# block -> (depth rule, layers per block, validity test)
DEPTH_RULES = {
    BasicBlock: ("6n+2", 6, lambda d: d >= 8 and (d - 2) % 6 == 0),
    Bottleneck: ("9n+2", 9, lambda d: d >= 11 and (d - 2) % 9 == 0),
}


def blocks_per_stage(family: str, depth: int, block: type) -> int:
    """Check `depth` against the block's rule (6n+2 or 9n+2) and return n."""
    rule, per_block, valid = DEPTH_RULES[block]
    check_int_depth(family, depth)
    check_depth(family, depth, rule, valid)
    return (depth - 2) // per_block


class ResNet(nn.Module):
    def __init__(self, depth: int = 20, block_name: str = "BasicBlock", num_classes: int = 10):
        super().__init__()
        block = pick_block("resnet", block_name, BLOCKS)
        n = blocks_per_stage("resnet", depth, block)

        self.in_planes = 16
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(block, 16, n, stride=1)  # 32x32
        self.layer2 = self._make_stage(block, 32, n, stride=2)  # 16x16
        self.layer3 = self._make_stage(block, 64, n, stride=2)  # 8x8
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
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model(family="resnet", dataset="cifar", is_family=True)
def resnet(num_classes: int = 10, depth: int = 20, block_name: str = "BasicBlock") -> nn.Module:
    """CIFAR ResNet of any depth: 6n+2 with BasicBlock, 9n+2 with Bottleneck."""
    return ResNet(depth=depth, block_name=block_name, num_classes=num_classes)


@register_model(family="resnet", dataset="cifar")
def resnet20(num_classes: int = 10) -> nn.Module:
    """ResNet-20 (BasicBlock, n=3)."""
    return ResNet(20, "BasicBlock", num_classes)


@register_model(family="resnet", dataset="cifar")
def resnet32(num_classes: int = 10) -> nn.Module:
    """ResNet-32 (BasicBlock, n=5)."""
    return ResNet(32, "BasicBlock", num_classes)


@register_model(family="resnet", dataset="cifar")
def resnet44(num_classes: int = 10) -> nn.Module:
    """ResNet-44 (BasicBlock, n=7)."""
    return ResNet(44, "BasicBlock", num_classes)


@register_model(family="resnet", dataset="cifar")
def resnet56(num_classes: int = 10) -> nn.Module:
    """ResNet-56 (BasicBlock, n=9)."""
    return ResNet(56, "BasicBlock", num_classes)


@register_model(family="resnet", dataset="cifar")
def resnet110(num_classes: int = 10) -> nn.Module:
    """ResNet-110 (BasicBlock, n=18)."""
    return ResNet(110, "BasicBlock", num_classes)


@register_model(family="resnet", dataset="cifar")
def resnet1202(num_classes: int = 10) -> nn.Module:
    """ResNet-1202 (BasicBlock, n=200)."""
    return ResNet(1202, "BasicBlock", num_classes)


@register_model(family="resnet", dataset="cifar")
def resnet164(num_classes: int = 10) -> nn.Module:
    """ResNet-164 (Bottleneck, n=18)."""
    return ResNet(164, "Bottleneck", num_classes)
