"""ShuffleNet V2 for CIFAR (Ma et al., 2018, "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design").

A basic unit splits the channels in two halves: one passes through unchanged, the other
goes 1x1 conv -> 3x3 depthwise conv -> 1x1 conv; the halves are concatenated and the
channels shuffled (two groups) so information crosses between the halves. A down-sampling
unit sends the whole input through two strided branches and doubles the channels. Each
stage is one down-sampling unit and then 3, 7 and 3 basic units.

For 32x32 inputs the stem is a stride-1 3x3 convolution 3 -> 24 without the max-pool of
the ImageNet model. `net_size` is the width multiplier of the paper (0.5, 1, 1.5, 2);
width 1.0 has 1,263,854 parameters with 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchcls.models.cifar._layers import init_weights
from torchcls.models.registry import register_model

# net_size -> output channels of stages 2, 3, 4 and of the last 1x1 convolution (paper Table 5)
WIDTHS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
NUM_BLOCKS = (3, 7, 3)  # basic units after the down-sampling unit of each stage


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class BasicUnit(nn.Module):
    """Split in halves; transform one half; concatenate; shuffle. Channels and size kept."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([keep, out], dim=1))


class DownUnit(nn.Module):
    """Two stride-2 branches on the whole input, each giving half of the output channels."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        # left branch: 3x3 depthwise (stride 2) -> 1x1
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch: 1x1 -> 3x3 depthwise (stride 2) -> 1x1
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], dim=1))


class ShuffleNetV2(nn.Module):
    def __init__(self, net_size: float = 1.0, num_classes: int = 10):
        super().__init__()
        if net_size not in WIDTHS:
            raise ValueError(
                f"shufflenetv2: net_size must be one of {', '.join(str(k) for k in WIDTHS)}, got {net_size!r}"
            )
        *stage_channels, last_channels = WIDTHS[net_size]
        self.conv1 = nn.Conv2d(3, 24, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        stages: list[nn.Module] = []
        for out_channels, num_blocks in zip(stage_channels, NUM_BLOCKS, strict=True):
            units = [DownUnit(in_channels, out_channels)]
            units += [BasicUnit(out_channels) for _ in range(num_blocks)]
            stages.append(nn.Sequential(*units))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(in_channels, last_channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(last_channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(last_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


@register_model(family="shufflenetv2", dataset="cifar")
def shufflenetv2(num_classes: int = 10, net_size: float = 1.0) -> nn.Module:
    """ShuffleNet V2 with a CIFAR stem; net_size (0.5, 1, 1.5, 2) is the width multiplier."""
    return ShuffleNetV2(net_size=net_size, num_classes=num_classes)
