"""Wide Residual Networks for CIFAR (Zagoruyko & Komodakis, 2016, "Wide Residual Networks").

WRN-d-k: a 3x3 stem of 16 filters, then three groups of n = (d-4)/6 pre-activation
"basic" blocks (BN-ReLU-conv3x3, BN-ReLU-[dropout]-conv3x3) with 16k, 32k and 64k filters
on 32x32, 16x16 and 8x8 maps; a final BN-ReLU, global average pooling and a linear layer.
Dropout, when used, sits between the two convolutions of each block (Sec. 2.4). Where
the width or resolution changes, the shortcut is a 1x1 convolution of the pre-activated input.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchcls.models.cifar._layers import (
    check_drop_rate,
    check_int_depth,
    check_positive_int,
    conv1x1,
    conv3x3,
    init_weights,
)
from torchcls.models.registry import check_depth, register_model


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = conv3x3(out_planes, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.drop_rate = drop_rate
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = conv1x1(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.relu(self.bn2(self.conv1(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + identity


class WideResNet(nn.Module):
    def __init__(self, depth: int = 28, widen_factor: int = 10, drop_rate: float = 0.0, num_classes: int = 10):
        super().__init__()
        check_int_depth("wrn", depth)
        check_depth("wrn", depth, "6n+4", lambda d: d >= 10 and (d - 4) % 6 == 0)
        check_positive_int("wrn", "widen_factor", widen_factor)
        check_drop_rate("wrn", drop_rate)
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]

        self.conv1 = conv3x3(3, widths[0])
        self.block1 = self._make_group(widths[0], widths[1], n, 1, drop_rate)  # 32x32
        self.block2 = self._make_group(widths[1], widths[2], n, 2, drop_rate)  # 16x16
        self.block3 = self._make_group(widths[2], widths[3], n, 2, drop_rate)  # 8x8
        self.bn = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    @staticmethod
    def _make_group(in_planes: int, out_planes: int, n: int, stride: int, drop_rate: float) -> nn.Sequential:
        return nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.block3(self.block2(self.block1(x)))
        x = self.relu(self.bn(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model(family="wrn", dataset="cifar", is_family=True)
def wrn(num_classes: int = 10, depth: int = 28, widen_factor: int = 10, drop_rate: float = 0.0) -> nn.Module:
    """WRN-depth-widen_factor; depth must be 6n+4."""
    return WideResNet(depth, widen_factor, drop_rate, num_classes)


@register_model(family="wrn", dataset="cifar")
def wrn28_10(num_classes: int = 10, drop_rate: float = 0.0) -> nn.Module:
    """WRN-28-10 (36.5M parameters); the paper's CIFAR recipe uses drop_rate=0.3."""
    return WideResNet(28, 10, drop_rate, num_classes)


@register_model(family="wrn", dataset="cifar")
def wrn16_4(num_classes: int = 10, drop_rate: float = 0.0) -> nn.Module:
    """WRN-16-4 (2.7M parameters)."""
    return WideResNet(16, 4, drop_rate, num_classes)


@register_model(family="wrn", dataset="cifar")
def wrn40_4(num_classes: int = 10, drop_rate: float = 0.0) -> nn.Module:
    """WRN-40-4 (8.9M parameters)."""
    return WideResNet(40, 4, drop_rate, num_classes)
