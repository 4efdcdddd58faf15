"""MobileNet (v1) for CIFAR (Howard et al., 2017, "MobileNets: Efficient Convolutional
Neural Networks for Mobile Vision Applications").

Every layer after the stem is a depthwise-separable block: a 3x3 depthwise convolution
(one filter per channel) then a 1x1 pointwise convolution mixing the channels, each
followed by BatchNorm and ReLU. For 32x32 inputs the stem convolution has stride 1 and the
network downsamples four times (32 -> 2), so the 7x7 average pool of the ImageNet model
becomes a 2x2 one. Width multiplier 1.0: 3,217,226 parameters with 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchcls.models.cifar._layers import init_weights
from torchcls.models.registry import register_model

# output channels of each depthwise-separable block; (channels, stride) where it downsamples
CONFIG: list = [64, (128, 2), 128, (256, 2), 256, (512, 2), 512, 512, 512, 512, 512, (1024, 2), 1024]


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_planes, in_planes, kernel_size=3, stride=stride, padding=1, groups=in_planes, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv2 = nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


class MobileNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks: list[nn.Module] = []
        in_planes = 32
        for item in CONFIG:
            out_planes, stride = item if isinstance(item, tuple) else (item, 1)
            blocks.append(DepthwiseSeparable(in_planes, out_planes, stride))
            in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


@register_model(family="mobilenet", dataset="cifar")
def mobilenet(num_classes: int = 10) -> nn.Module:
    """MobileNet v1 (width 1.0) with a stride-1 stem for 32x32 inputs."""
    return MobileNet(num_classes=num_classes)
