"""ResNeXt for CIFAR (Xie et al., 2017, "Aggregated Residual Transformations", Sec. 5.2).

ResNeXt-29 (C x 64d): a 3x3 stem of 64 filters, then three stages of n = (depth-2)/9
bottleneck blocks on 32x32, 16x16 and 8x8 maps. Each block is 1x1 reduce, a grouped 3x3
convolution with C groups ("cardinality") of d channels each, and 1x1 expand, each
followed by BN. The group width d is 64 in the first stage and doubles with each stage;
the block outputs are 64*w, 128*w and 256*w channels (w = widen_factor, 4 in the paper,
so 256/512/1024). Where a block changes the shape the shortcut is a 1x1 conv + BN.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from torchcls.models.cifar._layers import check_int_depth, check_positive_int, conv1x1, conv3x3, init_weights
from torchcls.models.registry import check_depth, register_model


class ResNeXtBottleneck(nn.Module):
    """conv1x1(D)-BN-ReLU, grouped conv3x3(D, C groups)-BN-ReLU, conv1x1(out)-BN; + shortcut, ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, cardinality: int, group_width: int):
        super().__init__()
        d = cardinality * group_width  # width of the grouped convolution
        self.conv_reduce = conv1x1(in_planes, d)
        self.bn_reduce = nn.BatchNorm2d(d)
        self.conv_group = conv3x3(d, d, stride, groups=cardinality)
        self.bn_group = nn.BatchNorm2d(d)
        self.conv_expand = conv1x1(d, out_planes)
        self.bn_expand = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn_reduce(self.conv_reduce(x)))
        out = self.relu(self.bn_group(self.conv_group(out)))
        out = self.bn_expand(self.conv_expand(out))
        return self.relu(out + identity)


class CifarResNeXt(nn.Module):
    def __init__(
        self, depth: int = 29, cardinality: int = 8, widen_factor: int = 4, base_width: int = 64, num_classes: int = 10
    ):
        super().__init__()
        check_int_depth("resnext", depth)
        check_depth("resnext", depth, "9n+2", lambda d: d >= 11 and (d - 2) % 9 == 0)
        check_positive_int("resnext", "cardinality", cardinality)
        check_positive_int("resnext", "widen_factor", widen_factor)
        check_positive_int("resnext", "base_width", base_width)
        n = (depth - 2) // 9
        stem = 64
        outs = [64 * widen_factor, 128 * widen_factor, 256 * widen_factor]

        self.conv1 = conv3x3(3, stem)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        in_planes = stem
        stages = []
        for i, out_planes in enumerate(outs):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(ResNeXtBottleneck(in_planes, out_planes, stride, cardinality, base_width * 2**i))
                in_planes = out_planes
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages  # 32x32, 16x16, 8x8
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(outs[-1], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model(family="resnext", dataset="cifar", is_family=True)
def resnext(num_classes: int = 10, depth: int = 29, cardinality: int = 8, widen_factor: int = 4) -> nn.Module:
    """CIFAR ResNeXt; depth must be 9n+2, group width 64 in the first stage."""
    return CifarResNeXt(depth, cardinality, widen_factor, num_classes=num_classes)


@register_model(family="resnext", dataset="cifar")
def resnext29_8x64d(num_classes: int = 10) -> nn.Module:
    """ResNeXt-29, 8x64d (34.4M parameters)."""
    return CifarResNeXt(29, 8, 4, num_classes=num_classes)


@register_model(family="resnext", dataset="cifar")
def resnext29_16x64d(num_classes: int = 10) -> nn.Module:
    """ResNeXt-29, 16x64d (68.2M parameters)."""
    return CifarResNeXt(29, 16, 4, num_classes=num_classes)
