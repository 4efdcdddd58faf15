"""Optimizer with parameter groups, and learning-rate schedules with linear warm-up.

Schedules are functions of the optimizer step, so they resume exactly (the scheduler's state is
its step count) and the original's step schedule keeps its meaning: the rate is multiplied by
gamma at the start of each listed (0-based) epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from torchcls.config import TrainConfig


def param_groups(
    model: nn.Module, weight_decay: float, no_wd_norm_bias: bool, lr: float, bias_lr_scale: float = 1.0
) -> list[dict]:
    """Two groups: the weights, and the 1-d parameters (biases, norm scales and shifts). The 1-d
    ones get no weight decay with `no_wd_norm_bias`, and a learning rate of lr * `bias_lr_scale`
    with their decay divided by it (the same decay per step as without the scale)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not no_wd_norm_bias and bias_lr_scale == 1.0:
        return [{"params": params, "weight_decay": weight_decay, "lr": lr}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr}]
    if no_decay:
        groups.append(
            {
                "params": no_decay,
                "lr": lr * bias_lr_scale,
                "weight_decay": 0.0 if no_wd_norm_bias else weight_decay / bias_lr_scale,
            }
        )
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_wd_norm_bias, cfg.lr, cfg.bias_lr_scale)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The multiplier of cfg.lr at optimizer step `step` (0-based)."""
    total = cfg.epochs * steps_per_epoch
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warm and step < warm:
        return (step + 1) / warm
    if cfg.lr_schedule == "step":
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(1 for m in cfg.schedule if epoch >= m)
    progress = min(1.0, (step - warm) / max(1, total - warm))
    end = cfg.final_lr_factor
    if cfg.lr_schedule == "cosine":
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
    # onecycle: after the warm-up, a linear decay to the end (a triangular schedule)
    return end + (1 - end) * (1 - progress)


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, cfg: TrainConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg))
