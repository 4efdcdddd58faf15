"""XResNet: ResNet with the "bag of tricks" changes, the network of the Imagenette/Imagewoof leaderboard.

He et al., 2019, "Bag of Tricks for Image Classification with Convolutional Neural Networks":
ResNet-C, a deep stem of three 3x3 convolutions (32, 32, 64 channels, the first with stride 2)
instead of one 7x7; ResNet-D, a shortcut that downsamples by 2x2 average pooling before its 1x1
convolution instead of a strided 1x1 that drops three quarters of the input; and the last
BatchNorm of every residual branch starting at zero, so that every block starts as the identity.
fastai's xresnet (used by the Imagewoof leaderboard's entries) is this network; `act="mish"`
swaps ReLU for Mish (Misra, 2019), as the leaderboard's best 5-epoch entries do.

Two options of the leaderboard's entries (fastai's `sa=True`, and ducha-aiki's / ayasyrev's MaxBlurPool):
`sa`, a simple self-attention layer (fastai's SimpleSelfAttention: o = x + gamma * (x x^T) W x over
the positions, W a spectrally normalised 1x1 convolution, gamma starting at 0) at the end of the
last block of the first stage; `blur`, the stem's max pooling done as max pooling at stride 1 and
then a 3x3 binomial blur at stride 2 (Zhang, 2019, "Making Convolutional Networks Shift-Invariant
Again").

A third, from the leaderboard's best 5- and 20-epoch entries (liuyao12's "depthwise(x6)" and
"(x4)" ResNets): `dw=m`, the 3x3 convolution of every bottleneck made depthwise and expanding,
each of its channels filtered m ways (planes -> m * planes, groups = planes), the last 1x1 mixing
the m * planes maps (his README's `conv3x3(width, width * 4, stride, groups=width)`).

Entries: xresnet18 and xresnet34 (basic blocks), xresnet26 and xresnet50 (bottlenecks; 26: two
blocks a stage, as timm's resnet26d), xresnet18_mish / xresnet50_mish, xresnet18_mish_sa
(Mish, self-attention, blurred stem pooling), and xresnet26_mish_dw4, xresnet50_mish_dw4 and
xresnet50_mish_dw6 (Mish, depthwise x4 / x6 bottlenecks).
Built for ImageNet-sized inputs (any size from about 64 px works: global average pooling).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from torchcls.models.registry import register_model

# depth -> (bottleneck?, blocks per stage)
LAYOUTS = {
    18: (False, (2, 2, 2, 2)),
    26: (True, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
}
ACTIVATIONS = {"relu": nn.ReLU, "mish": nn.Mish, "silu": nn.SiLU}


def conv_bn(
    c_in: int, c_out: int, k: int = 3, stride: int = 1, act=None, zero: bool = False, groups: int = 1
) -> nn.Sequential:
    bn = nn.BatchNorm2d(c_out)
    nn.init.constant_(bn.weight, 0.0 if zero else 1.0)
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), bn]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SimpleSelfAttention(nn.Module):
    """x + gamma * (x x^T) (W x), x the (C, H*W) feature map of each image: attention over all
    positions at O(H W C^2), W a 1x1 convolution with spectral normalisation, gamma learnt from 0
    (so the layer starts as the identity). fastai's SimpleSelfAttention (ks=1, not symmetric)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = spectral_norm(nn.Conv1d(channels, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        b, c, h, w = x.shape
        f = x.reshape(b, c, h * w)
        o = torch.bmm(torch.bmm(f, f.transpose(1, 2)), self.conv(f))
        return (f + self.gamma * o).reshape(b, c, h, w)


class MaxBlurPool(nn.Module):
    """Max pooling (3x3, stride 1) then a 3x3 binomial blur at stride 2, per channel: the
    anti-aliased replacement of MaxPool2d(3, 2, 1) (Zhang, 2019)."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).reshape(1, 1, 3, 3), persistent=False)

    def forward(self, x):
        x = F.max_pool2d(x, 3, 1, 1)
        c = x.shape[1]
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 3, 3), stride=2, padding=1, groups=c)


class Block(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int, bottleneck: bool, act, sa: bool = False, dw: int = 0):
        super().__init__()
        c_out = planes * (4 if bottleneck else 1)
        if bottleneck:
            # dw = m: the 3x3 convolution is depthwise and expanding, each channel filtered m ways
            # (planes -> m * planes, groups = planes), and the last 1x1 mixes the m * planes maps
            mid = planes * dw if dw else planes
            self.branch = nn.Sequential(
                conv_bn(c_in, planes, 1, act=act),
                conv_bn(planes, mid, 3, stride, act=act, groups=planes if dw else 1),
                conv_bn(mid, c_out, 1, zero=True),
            )
        else:
            self.branch = nn.Sequential(conv_bn(c_in, planes, 3, stride, act=act), conv_bn(planes, c_out, 3, zero=True))
        if sa:
            self.branch.append(SimpleSelfAttention(c_out))
        short = []
        if stride != 1:
            short.append(nn.AvgPool2d(2, ceil_mode=True))
        if c_in != c_out:
            short.append(conv_bn(c_in, c_out, 1))
        self.shortcut = nn.Sequential(*short)
        self.act = act()

    def forward(self, x):
        return self.act(self.branch(x) + self.shortcut(x))


class XResNet(nn.Module):
    def __init__(self, depth: int = 18, num_classes: int = 1000, act: str = "relu", in_channels: int = 3,
                 sa: bool = False, blur: bool = False, dw: int = 0):  # fmt: skip
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"xresnet: depth must be one of {sorted(LAYOUTS)}, got {depth}")
        if dw and not LAYOUTS[depth][0]:
            raise ValueError(f"xresnet: depthwise blocks (dw) need a bottleneck depth (26, 50), got {depth}")
        if act not in ACTIVATIONS:
            raise ValueError(f"xresnet: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        a = ACTIVATIONS[act]
        bottleneck, blocks = LAYOUTS[depth]
        self.input_channels = in_channels
        self.stem = nn.Sequential(
            conv_bn(in_channels, 32, 3, 2, act=a), conv_bn(32, 32, act=a), conv_bn(32, 64, act=a),
            MaxBlurPool() if blur else nn.MaxPool2d(3, 2, 1),
        )  # fmt: skip
        layers, c = [], 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            for j in range(n):
                attend = sa and i == 0 and j == n - 1  # fastai's place: the first stage's last block
                layers.append(Block(c, planes, 2 if (i > 0 and j == 0) else 1, bottleneck, a, attend, dw))
                c = planes * (4 if bottleneck else 1)
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def _entry(depth: int, act: str = "relu", sa: bool = False, dw: int = 0):
    def build(num_classes: int = 1000, in_channels: int = 3) -> XResNet:
        return XResNet(depth, num_classes, act, in_channels, sa=sa, blur=sa, dw=dw)

    suffix = ("" if act == "relu" else f"_{act}") + ("_sa" if sa else "") + (f"_dw{dw}" if dw else "")
    build.__name__ = f"xresnet{depth}{suffix}"
    extra = ", self-attention in the first stage and a blurred stem pooling" if sa else ""
    if dw:
        extra += f", depthwise x{dw} 3x3 convolutions in the bottlenecks"
    build.__doc__ = (
        f"XResNet-{depth} with {act} (deep stem, ResNet-D shortcuts, zero-initialised last BN of each branch{extra})."
    )
    return register_model(family="xresnet", dataset="imagenet")(build)


xresnet18 = _entry(18)
xresnet26 = _entry(26)
xresnet34 = _entry(34)
xresnet50 = _entry(50)
xresnet18_mish = _entry(18, "mish")
xresnet34_mish = _entry(34, "mish")
xresnet50_mish = _entry(50, "mish")
xresnet18_mish_sa = _entry(18, "mish", sa=True)
xresnet26_mish_dw4 = _entry(26, "mish", dw=4)
xresnet50_mish_dw4 = _entry(50, "mish", dw=4)
xresnet50_mish_dw6 = _entry(50, "mish", dw=6)
