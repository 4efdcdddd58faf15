"""AlexNet for CIFAR (Krizhevsky et al., 2012), as cut down for 32x32 inputs.

Five convolutions and a single linear classifier, no dropout and no BatchNorm: the
first convolution keeps AlexNet's 11x11 stride-4 filters, so a 32x32 image is 8x8
after it and 1x1 after the third max-pool, which leaves 256 features for the head.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from torchcls.models.cifar._layers import init_weights
from torchcls.models.registry import register_model


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=5),  # 32 -> 8
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # 8 -> 4
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # 4 -> 2
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # 2 -> 1
        )
        self.classifier = nn.Linear(256, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model(family="alexnet", dataset="cifar")
def alexnet(num_classes: int = 10) -> nn.Module:
    """AlexNet, CIFAR variant: 5 convs + 1 linear (2.47M parameters)."""
    return AlexNet(num_classes=num_classes)
