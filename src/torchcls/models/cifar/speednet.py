"""SpeedNet: a small VGG-like network designed for time-to-accuracy on CIFAR-10.

Written for torchcls after the airbench line of work (Keller Jordan, "94% on CIFAR-10 in 3.29
seconds on a single GPU", 2024), whose ideas it uses; the code is this project's own:

- a frozen 2x2 "whitening" convolution first, set from the training data before the first step
  (`data_init`): the eigenvectors of the covariance of 2x2 patches, scaled by 1/sqrt(eigenvalue),
  with both signs, so the first layer sees decorrelated unit-variance inputs (only its bias learns);
- three groups of conv3x3 -> max-pool 2 -> BatchNorm -> GELU -> conv3x3 -> BatchNorm -> GELU, widths
  64/256/256 by default, no residual connections;
- convolutions initialised with an identity (Dirac) kernel on their first in_channels filters;
- BatchNorm with fixed scale 1 (only the shift learns) and fast running statistics (momentum 0.4);
- a global max-pool, a bias-free linear classifier and a fixed output temperature (x 1/9).

Input 32x32x3: whitening 2x2 (no padding) -> 31, groups pool to 15, 7, 3, then the global max-pool.
The recipe that trains it is the built-in cifar10-speednet (src/torchcls/recipes/); its results are in docs/RESULTS.md.

`speednet_mini` (widths 24/64/128, 0.28 M parameters) is the main job's network, chosen for time to
accuracy on 28x28 grayscale Fashion-MNIST on 2-core CPUs without bf16 as well as with it: built for
the data's own channel count (`in_channels`, 1 for grayscale: `models.input_channels`), its
first group runs at 27x27 with few channels, where most of a step's time goes, and its wider
groups at 13x13 and 6x6. How it was chosen, with every run, is in docs/RESULTS.md.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from torchcls.models.registry import register_model


class _BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features: int):
        super().__init__(num_features, eps=1e-12, momentum=0.4)
        self.weight.requires_grad_(False)  # scale fixed at 1: only the shift learns


class _ConvGroup(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _BatchNorm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _BatchNorm(c_out)
        self.act = nn.GELU()
        for conv in (self.conv1, self.conv2):
            w = conv.weight.data
            nn.init.dirac_(w[: w.size(1)])  # identity on the first in_channels filters, default init on the rest

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class SpeedNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (64, 256, 256),
        in_channels: int = 3,
        scale: float = 1 / 9,
    ):
        super().__init__()
        self.input_channels = in_channels  # models.input_channels: 1 for grayscale data
        patch = in_channels * 2 * 2
        self.whiten = nn.Conv2d(in_channels, 2 * patch, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # set by data_init, then frozen
        self.act = nn.GELU()
        groups, c = [], 2 * patch
        for w in widths:
            groups.append(_ConvGroup(c, w))
            c = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)  # 3x3 -> 1 at 32 px; any size from 8 px up
        self.head = nn.Linear(c, num_classes, bias=False)
        self.scale = scale
        self.register_buffer("whitened", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def data_init(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening layer from normalised training images (N, C, H, W), before training."""
        x = images.float()
        c = x.shape[1]
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1)  # N, C, H-1, W-1, 2, 2
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4).double()
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)
        eigval, eigvec = torch.linalg.eigh(cov)  # ascending
        eigval, eigvec = eigval.flip(0), eigvec.T.flip(0)  # rows: eigenvectors, largest first
        w = (eigvec / torch.sqrt(eigval.clamp_min(0) + eps)[:, None]).reshape(-1, c, 2, 2)
        self.whiten.weight.copy_(torch.cat([w, -w]).to(self.whiten.weight.dtype))
        self.whiten.bias.zero_()
        self.whitened.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        x = self.pool(self.groups(x))
        return self.head(torch.flatten(x, 1)) * self.scale


@register_model(family="speednet", dataset="cifar")
def speednet(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """SpeedNet, widths 64/256/256 (the 94% CIFAR-10 recipe's network)."""
    return SpeedNet(num_classes, in_channels=in_channels)


@register_model(family="speednet", dataset="cifar")
def speednet_wide(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """SpeedNet, widths 128/384/384."""
    return SpeedNet(num_classes, widths=(128, 384, 384), in_channels=in_channels)


@register_model(family="speednet", dataset="cifar")
def speednet_mini(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """SpeedNet, widths 24/64/128 (the main job's network: Fashion-MNIST, 28x28 grayscale)."""
    return SpeedNet(num_classes, widths=(24, 64, 128), in_channels=in_channels)
