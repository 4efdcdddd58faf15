"""MobileNetV2 for CIFAR (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and
Linear Bottlenecks").

Each block is an inverted residual: a 1x1 convolution expanding the channels by the
expansion factor t, a 3x3 depthwise convolution, and a linear (no ReLU) 1x1 projection
back down. For 32x32 inputs the stem convolution and the second stage use stride 1, so
the network downsamples three times (32 -> 4). Stride-1 blocks add a shortcut: the
identity when the channel count is kept, otherwise a 1x1 convolution + BatchNorm
projection. A 1x1 convolution to 1280 channels, global average pooling and a Linear
head finish it: 2,296,922 parameters with 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchcls.models.cifar._layers import init_weights
from torchcls.models.registry import register_model

# (expansion t, output channels c, number of blocks n, stride of the first block s)
CONFIG: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 on ImageNet; 1 for 32x32 inputs
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class InvertedResidual(nn.Module):
    """expand (1x1) -> depthwise (3x3) -> project (1x1, linear); shortcut when stride is 1."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 1:
            out = out + self.shortcut(x)
        return out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks: list[nn.Module] = []
        in_planes = 32
        for expansion, out_planes, num_blocks, stride in CONFIG:
            for i in range(num_blocks):
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, stride if i == 0 else 1))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(in_planes, 1280, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1280, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


@register_model(family="mobilenetv2", dataset="cifar")
def mobilenetv2(num_classes: int = 10) -> nn.Module:
    """MobileNetV2 (width 1.0) with a stride-1 stem and second stage for 32x32 inputs."""
    return MobileNetV2(num_classes=num_classes)
