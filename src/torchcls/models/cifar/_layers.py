"""Small pieces shared by the CIFAR model files: conv helpers, weight init, argument checks."""

from __future__ import annotations

import torch.nn as nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows or precedes it)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def init_weights(model: nn.Module) -> None:
    """Standard init: Kaiming-normal convs (fan_out, ReLU), BN weight 1 / bias 0, Linear bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def pick_block(family: str, block_name: str, blocks: dict[str, type]) -> type:
    """Resolve a block name case-insensitively ("basicblock", "Bottleneck", ...)."""
    if isinstance(block_name, str):
        by_lower = {k.lower(): v for k, v in blocks.items()}
        block = by_lower.get(block_name.lower())
        if block is not None:
            return block
    raise ValueError(f"{family}: unknown block_name {block_name!r}; choose one of: {', '.join(blocks)}")


def check_positive_int(family: str, name: str, value, minimum: int = 1) -> None:
    """One-line ValueError unless `value` is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{family}: {name} must be an integer >= {minimum}, got {value!r}")


def check_drop_rate(family: str, drop_rate) -> None:
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"{family}: drop_rate must be a number in [0, 1), got {drop_rate!r}")


def check_int_depth(family: str, depth) -> None:
    """Non-integer depths get their own message (the depth rule check covers the values)."""
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise ValueError(f"{family}: depth must be an integer, got {depth!r}")
