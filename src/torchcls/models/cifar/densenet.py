"""DenseNet-BC for CIFAR (Huang et al., 2017, "Densely Connected Convolutional Networks").

A 3x3 stem of 2k filters (k = growth rate), then three dense blocks of n = (depth-4)/6
bottleneck layers on 32x32, 16x16 and 8x8 maps. Each layer is BN-ReLU-conv1x1(4k)-
BN-ReLU-conv3x3(k) and its k new maps are concatenated onto its input. Between blocks a
transition layer (BN-ReLU-conv1x1-avgpool 2x2) divides the channels by compression_rate
(2 for the paper's theta = 0.5). A final BN-ReLU, global average pooling and a linear layer.
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


class BottleneckLayer(nn.Module):
    """BN-ReLU-conv1x1(4k), BN-ReLU-conv3x3(k), [dropout]; output = cat(input, new k maps)."""

    def __init__(self, in_planes: int, growth_rate: int, drop_rate: float = 0.0):
        super().__init__()
        inter = 4 * growth_rate
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, inter)
        self.bn2 = nn.BatchNorm2d(inter)
        self.conv2 = conv3x3(inter, growth_rate)
        self.relu = nn.ReLU(inplace=True)
        self.drop_rate = drop_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (compressing the channels), then 2x2 average pooling."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = conv1x1(in_planes, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.bn(x))))


class DenseNet(nn.Module):
    def __init__(
        self,
        depth: int = 100,
        growth_rate: int = 12,
        compression_rate: float = 2,
        drop_rate: float = 0.0,
        num_classes: int = 10,
    ):
        super().__init__()
        check_int_depth("densenet", depth)
        check_depth("densenet", depth, "6n+4", lambda d: d >= 10 and (d - 4) % 6 == 0)
        check_positive_int("densenet", "growth_rate", growth_rate)
        if isinstance(compression_rate, bool) or not isinstance(compression_rate, (int, float)) or compression_rate < 1:
            raise ValueError(f"densenet: compression_rate must be a number >= 1, got {compression_rate!r}")
        check_drop_rate("densenet", drop_rate)
        n = (depth - 4) // 6

        planes = 2 * growth_rate
        self.conv1 = conv3x3(3, planes)
        self.block1, planes = self._make_block(planes, n, growth_rate, drop_rate)  # 32x32
        self.trans1, planes = self._make_transition(planes, compression_rate)
        self.block2, planes = self._make_block(planes, n, growth_rate, drop_rate)  # 16x16
        self.trans2, planes = self._make_transition(planes, compression_rate)
        self.block3, planes = self._make_block(planes, n, growth_rate, drop_rate)  # 8x8
        self.bn = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        init_weights(self)

    @staticmethod
    def _make_block(in_planes: int, n: int, growth_rate: int, drop_rate: float):
        layers = [BottleneckLayer(in_planes + i * growth_rate, growth_rate, drop_rate) for i in range(n)]
        return nn.Sequential(*layers), in_planes + n * growth_rate

    @staticmethod
    def _make_transition(in_planes: int, compression_rate: float):
        out_planes = int(in_planes // compression_rate)
        return Transition(in_planes, out_planes), out_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.trans1(self.block1(x))
        x = self.trans2(self.block2(x))
        x = self.block3(x)
        x = self.relu(self.bn(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model(family="densenet", dataset="cifar", is_family=True)
def densenet(
    num_classes: int = 10, depth: int = 100, growth_rate: int = 12, compression_rate: float = 2, drop_rate: float = 0.0
) -> nn.Module:
    """DenseNet-BC; depth must be 6n+4 ((depth-4)/6 bottleneck layers per block)."""
    return DenseNet(depth, growth_rate, compression_rate, drop_rate, num_classes)


@register_model(family="densenet", dataset="cifar")
def densenet_bc_100_12(num_classes: int = 10, drop_rate: float = 0.0) -> nn.Module:
    """DenseNet-BC (L=100, k=12), 0.77M parameters."""
    return DenseNet(100, 12, 2, drop_rate, num_classes)


@register_model(family="densenet", dataset="cifar")
def densenet_bc_190_40(num_classes: int = 10, drop_rate: float = 0.0) -> nn.Module:
    """DenseNet-BC (L=190, k=40), 25.6M parameters."""
    return DenseNet(190, 40, 2, drop_rate, num_classes)
