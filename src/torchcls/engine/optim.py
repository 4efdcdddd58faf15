"""Optimizer with parameter groups, and learning-rate schedules with linear warm-up.

Schedules are functions of the optimizer step, so they resume exactly (the scheduler's state is
its step count) and the original's step schedule keeps its meaning: the rate is multiplied by
gamma at the start of each listed (0-based) epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from torchcls.config import TrainConfig
from torchcls.engine.muon import Muon
from torchcls.errors import UserError


def param_groups(
    params: list[nn.Parameter], weight_decay: float, no_wd_norm_bias: bool, lr: float, bias_lr_scale: float = 1.0
) -> list[dict]:
    """Two groups: the weights, and the 1-d parameters (biases, norm scales and shifts). The 1-d
    ones get no weight decay with `no_wd_norm_bias`, and a learning rate of lr * `bias_lr_scale`
    with their decay divided by it (the same decay per step as without the scale)."""
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


EARLY = "until_epoch"  # a parameter group trained only until this epoch (its rate decays to 0 by then)


def whiten_bias(model: nn.Module) -> nn.Parameter:
    """The bias of a model's data-set whitening first layer (SpeedNet's `whiten`)."""
    layer = getattr(model, "whiten", None)
    bias = getattr(layer, "bias", None)
    if not isinstance(bias, nn.Parameter):
        raise UserError(
            f"--whiten-bias-epochs needs a model with a whitening first layer (speednet), not {type(model).__name__}"
        )
    return bias


def build_optimizer(
    model: nn.Module, cfg: TrainConfig, total_steps: int | None = None, amp_dtype: torch.dtype | None = None
) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov), AdamW or RAdam (both with decoupled weight decay: w *= 1 - lr * wd),
    or Muon (engine/muon.py: the convolution filters, at cfg.muon_lr; SGD for the rest), with
    Lookahead on top when cfg.lookahead_k > 0. With cfg.whiten_bias_epochs > 0 the whitening
    layer's bias is a group of its own, trained only for that many epochs (airbench's choice).
    `total_steps` (the run's optimizer steps) is needed by the cubic Lookahead schedule only;
    `amp_dtype` (the run's autocast dtype) sets Muon's iteration dtype under --muon-ns-dtype auto."""
    params = [p for p in model.parameters() if p.requires_grad]
    early, muon = [], []
    if cfg.whiten_bias_epochs > 0:  # the 1-d parameters' rate and decay (param_groups), in a group of its own
        bias = whiten_bias(model)
        params = [p for p in params if p is not bias]
        args = (cfg.weight_decay, cfg.no_wd_norm_bias, cfg.lr, cfg.bias_lr_scale)
        early = [{**g, EARLY: cfg.whiten_bias_epochs} for g in param_groups([bias], *args) if g["params"]]
    if cfg.optimizer == "muon":  # the filters to Muon, the rest as for SGD
        muon = [{"params": [p for p in params if p.ndim == 4], "lr": cfg.muon_lr, "momentum": cfg.muon_momentum,
                 "muon": True, "weight_decay": 0.0}]  # fmt: skip
        params = [p for p in params if p.ndim != 4]
    groups = param_groups(params, cfg.weight_decay, cfg.no_wd_norm_bias, cfg.lr, cfg.bias_lr_scale)
    groups = [g for g in muon + groups + early if g["params"]]
    nesterov = cfg.nesterov and cfg.momentum > 0
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)
    elif cfg.optimizer == "muon":
        auto_bf16 = cfg.muon_ns_dtype == "auto" and amp_dtype == torch.bfloat16  # fp16 would overflow: float32
        ns_dtype = torch.bfloat16 if auto_bf16 else torch.float32
        opt = Muon(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov, ns_dtype=ns_dtype)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps)
    else:
        opt = torch.optim.RAdam(
            groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.adam_eps, decoupled_weight_decay=True
        )
    if cfg.lookahead_k > 0:
        alpha, buffers, last_step = cfg.lookahead_alpha, [], None
        if cfg.lookahead_schedule == "cubic":
            if not total_steps:
                raise ValueError("the cubic Lookahead schedule needs the run's total_steps")
            alpha, last_step = cubic_alpha(cfg.lookahead_alpha, total_steps), total_steps
            buffers = [b for b in model.buffers() if b.is_floating_point()]  # airbench averages them too
        add_lookahead(opt, cfg.lookahead_k, alpha, buffers, last_step)
    return opt


def cubic_alpha(end: float, total_steps: int):
    """airbench94's Lookahead schedule as alpha(step): 1 - (1 - end) * (step / total)^3, so the slow
    weights follow the fast ones at the start (alpha 1: no averaging) and average more as the
    learning rate falls, `end` at the last step (airbench: 1 - 0.95^5, every 5 steps). With it, as
    in airbench, the model's floating-point buffers (BatchNorm's running statistics) are averaged
    along with the weights."""
    return lambda step: 1 - (1 - end) * min(1.0, step / total_steps) ** 3


SLOW = "lookahead_slow"  # in each parameter group: its parameters' slow weights
SLOW_BUFFERS = "lookahead_slow_buffers"  # in the first parameter group: the averaged buffers' slow copies
COUNT = "lookahead_steps"  # in the first parameter group: optimizer steps taken


def add_lookahead(
    optimizer: torch.optim.Optimizer,
    k: int,
    alpha: float | Callable[[int], float],
    buffers: list[torch.Tensor] = (),
    last_step: int | None = None,
):
    """Lookahead (Zhang et al., 2019): after every k-th step of `optimizer`, the slow weights move
    alpha of the way towards the fast ones, slow += alpha * (fast - slow), and the fast weights
    restart from them; the slow weights start as the run's initial weights. `alpha` is a number or
    a function of the optimizer steps taken (cubic_alpha); `buffers` (tensors outside the
    optimizer, such as BatchNorm statistics) are averaged the same way. At `last_step`, when it is
    not a sync, the weights take the slow ones as they are (airbench's final copy). Built on the
    optimizer's public step hooks. The slow weights and the step count are extra keys of its
    parameter groups, so its state_dict (and so a checkpoint) carries them and a resumed run
    continues exactly, while the optimizer's own per-parameter state stays untouched. A step that
    the gradient scaler skips (fp16 overflow) never calls step() and is not counted."""

    @torch.no_grad()
    def before_step(opt, args, kwargs):
        for group in opt.param_groups:
            if SLOW not in group:  # a fresh run (a resumed one brings them from its checkpoint)
                group[SLOW] = [p.detach().clone() for p in group["params"]]
        if buffers and SLOW_BUFFERS not in opt.param_groups[0]:
            opt.param_groups[0][SLOW_BUFFERS] = [b.detach().clone() for b in buffers]

    @torch.no_grad()
    def after_step(opt, args, kwargs):
        first = opt.param_groups[0]
        first[COUNT] = first.get(COUNT, 0) + 1
        if first[COUNT] % k == 0:
            a = alpha(first[COUNT]) if callable(alpha) else alpha
        elif first[COUNT] == last_step:  # the end between two syncs: the weights take the slow ones (a = 0)
            a = 0.0
        else:
            return
        pairs = [(group["params"], group[SLOW]) for group in opt.param_groups]
        if buffers:
            pairs.append((buffers, first[SLOW_BUFFERS]))
        for fasts, slows in pairs:
            for i, (p, slow) in enumerate(zip(fasts, slows, strict=True)):
                if slow.device != p.device or slow.dtype != p.dtype:  # loaded onto another device
                    slows[i] = slow = slow.to(device=p.device, dtype=p.dtype)
                slow.lerp_(p, a)
                p.copy_(slow)

    optimizer.register_step_pre_hook(before_step)
    optimizer.register_step_post_hook(after_step)
    return optimizer


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
    if cfg.lr_schedule == "flatcos":  # fastai's fit_flat_cos: flat, then a cosine over the last part
        anneal = max(0.0, (step - cfg.anneal_start * total) / max(1.0, (1 - cfg.anneal_start) * total))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, anneal)))
    # onecycle: after the warm-up, a linear decay to the end (a triangular schedule)
    return end + (1 - end) * (1 - progress)


def early_factor(step: int, steps_per_epoch: int, until_epoch: float) -> float:
    """The rate multiplier of a group trained only until `until_epoch`: a linear decay from 1 at
    step 0 to 0 there, then 0 (the parameters stay where they are)."""
    return max(0.0, 1.0 - step / max(1.0, until_epoch * steps_per_epoch))


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, cfg: TrainConfig):
    """The run's schedule for every group, but a group trained only at the start (EARLY)."""

    def rule(group):
        if EARLY in group:
            return lambda step: early_factor(step, steps_per_epoch, group[EARLY])
        return lambda step: lr_factor(step, steps_per_epoch, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [rule(g) for g in optimizer.param_groups])
