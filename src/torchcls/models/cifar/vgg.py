"""VGG for CIFAR (Simonyan & Zisserman, 2015, "Very Deep Convolutional Networks").

Configurations A (11), B (13), D (16) and E (19) of the paper's Table 1: stacks of 3x3
convolutions, a 2x2 max-pool after each stage. On a 32x32 input the five pools leave a
1x1x512 map, so the three fully connected layers of the ImageNet model become a single
Linear(512, num_classes). The `_bn` variants put a BatchNorm after every convolution.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from torchcls.models.cifar._layers import init_weights
from torchcls.models.registry import register_model

# number = 3x3 conv with that many output channels, "M" = 2x2 max-pool
CONFIGS: dict[int, list] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(config: list, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, depth: int = 16, batch_norm: bool = False, num_classes: int = 10):
        super().__init__()
        if depth not in CONFIGS:
            raise ValueError(f"vgg: depth must be one of {', '.join(map(str, CONFIGS))}, got {depth!r}")
        self.features = make_layers(CONFIGS[depth], batch_norm)
        self.classifier = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model(family="vgg", dataset="cifar")
def vgg11(num_classes: int = 10) -> nn.Module:
    """VGG-11 (configuration A), no BatchNorm."""
    return VGG(11, batch_norm=False, num_classes=num_classes)


@register_model(family="vgg", dataset="cifar")
def vgg13(num_classes: int = 10) -> nn.Module:
    """VGG-13 (configuration B), no BatchNorm."""
    return VGG(13, batch_norm=False, num_classes=num_classes)


@register_model(family="vgg", dataset="cifar")
def vgg16(num_classes: int = 10) -> nn.Module:
    """VGG-16 (configuration D), no BatchNorm."""
    return VGG(16, batch_norm=False, num_classes=num_classes)


@register_model(family="vgg", dataset="cifar")
def vgg19(num_classes: int = 10) -> nn.Module:
    """VGG-19 (configuration E), no BatchNorm."""
    return VGG(19, batch_norm=False, num_classes=num_classes)


@register_model(family="vgg", dataset="cifar")
def vgg11_bn(num_classes: int = 10) -> nn.Module:
    """VGG-11 with BatchNorm after every convolution."""
    return VGG(11, batch_norm=True, num_classes=num_classes)


@register_model(family="vgg", dataset="cifar")
def vgg13_bn(num_classes: int = 10) -> nn.Module:
    """VGG-13 with BatchNorm after every convolution."""
    return VGG(13, batch_norm=True, num_classes=num_classes)


@register_model(family="vgg", dataset="cifar")
def vgg16_bn(num_classes: int = 10) -> nn.Module:
    """VGG-16 with BatchNorm after every convolution."""
    return VGG(16, batch_norm=True, num_classes=num_classes)


@register_model(family="vgg", dataset="cifar")
def vgg19_bn(num_classes: int = 10) -> nn.Module:
    """VGG-19 with BatchNorm after every convolution."""
    return VGG(19, batch_norm=True, num_classes=num_classes)
