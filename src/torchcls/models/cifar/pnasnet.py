"""PNASNet for CIFAR (Liu et al., 2018, "Progressive Neural Architecture Search"),
the small hand-sized variants of kuangliu/pytorch-cifar.

A cell combines "separable" convolutions (a grouped k x k convolution with one group per
input channel, then BatchNorm) and a 3x3 max-pool branch by summing pairs of branches.
The network is a 3x3 stem, then three stages of 6 cells separated by stride-2 cells that
double the channels (32x32 -> 8x8), global average pooling and a Linear head.

- `pnasnet_a`: cell A (7x7 separable conv + max-pool), 44 channels: 130,646 parameters.
- `pnasnet_b` (alias `pnasnet`): cell B (7x7 + 3x3 separable convs, max-pool + 5x5
  separable conv, the two sums concatenated and reduced by a 1x1 conv), 32 channels:
  451,626 parameters (both with 10 classes).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchcls.models.cifar._layers import init_weights
from torchcls.models.registry import register_model

CELLS_PER_STAGE = 6


class SepConv(nn.Module):
    """k x k convolution with groups = input channels ("separable"), then BatchNorm."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_planes,
            out_planes,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=in_planes,
            bias=False,
        )
        self.bn1 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv1(x))


class PoolBranch(nn.Module):
    """3x3 max-pool; when it downsamples, a 1x1 conv + BN brings it to the output channels."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.proj: nn.Module = nn.Identity()
        if stride == 2:
            self.proj = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, bias=False), nn.BatchNorm2d(out_planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.max_pool2d(x, kernel_size=3, stride=self.stride, padding=1))


class CellA(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__()
        self.sep_conv1 = SepConv(in_planes, out_planes, kernel_size=7, stride=stride)
        self.pool = PoolBranch(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.sep_conv1(x) + self.pool(x))


class CellB(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__()
        self.sep_conv1 = SepConv(in_planes, out_planes, kernel_size=7, stride=stride)
        self.sep_conv2 = SepConv(in_planes, out_planes, kernel_size=3, stride=stride)
        self.sep_conv3 = SepConv(in_planes, out_planes, kernel_size=5, stride=stride)
        self.pool = PoolBranch(in_planes, out_planes, stride)
        self.conv2 = nn.Conv2d(2 * out_planes, out_planes, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = F.relu(self.sep_conv1(x) + self.sep_conv2(x))
        b2 = F.relu(self.pool(x) + self.sep_conv3(x))
        return F.relu(self.bn2(self.conv2(torch.cat([b1, b2], dim=1))))


class PNASNet(nn.Module):
    def __init__(self, cell: type, num_planes: int, num_classes: int = 10, cells_per_stage: int = CELLS_PER_STAGE):
        super().__init__()
        self.conv1 = nn.Conv2d(3, num_planes, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_planes)
        layers: list[nn.Module] = []
        in_planes = num_planes
        for stage in range(3):
            planes = num_planes * 2**stage
            if stage > 0:  # a stride-2 cell doubles the channels between stages
                layers.append(cell(in_planes, planes, stride=2))
                in_planes = planes
            layers += [cell(planes, planes, stride=1) for _ in range(cells_per_stage)]
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = torch.flatten(self.pool(out), 1)
        return self.linear(out)


@register_model(family="pnasnet", dataset="cifar")
def pnasnet_a(num_classes: int = 10) -> nn.Module:
    """PNASNet with cell A and 44 channels in the first stage."""
    return PNASNet(CellA, num_planes=44, num_classes=num_classes)


@register_model(family="pnasnet", dataset="cifar", aliases=("pnasnet",))
def pnasnet_b(num_classes: int = 10) -> nn.Module:
    """PNASNet with cell B and 32 channels in the first stage (also `pnasnet`)."""
    return PNASNet(CellB, num_planes=32, num_classes=num_classes)
