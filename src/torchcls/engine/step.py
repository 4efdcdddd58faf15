"""The one training step: inputs, autocast, forward, loss, backward, update.

`torchcls train` runs it once a batch (engine/epoch.py); `torchcls bench` times it; evaluation
uses the same `prepare` and `autocast_ctx`. A batch arrives as uint8 on the device and leaves
as an optimizer update.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def autocast_ctx(device: torch.device, amp_dtype: torch.dtype | None):
    """torch.autocast for `amp_dtype` on `device`, or nothing when precision is float32."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
    channels: int | None = 3,
) -> torch.Tensor:
    """(x / 255 - mean) / std per channel, as `dtype`; uint8 input is scaled by 1/255, floating input
    is taken to be in [0, 1] already. A 1-channel batch is repeated to `channels` (3: the models'
    input) after normalising; channels=None keeps the batch's own channel count."""
    if x.dim() != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} values for {c} channels")
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    # one multiply and one subtract: x * (1 / (scale * std)) - mean / std
    mul = (1.0 / (scale * s)).to(dtype=dtype, device=x.device).view(1, c, 1, 1)
    sub = (m / s).to(dtype=dtype, device=x.device).view(1, c, 1, 1)
    out = x.to(dtype).mul_(mul).sub_(sub)
    if channels is not None and c == 1 and channels != 1:
        out = out.expand(-1, channels, -1, -1).contiguous()
    return out


def prepare(x: torch.Tensor, mean, std, channels_last: bool, channels: int = 3) -> torch.Tensor:
    """uint8 batch on the device -> normalised float input with the model's channel count
    (`models.input_channels`) in its memory format."""
    x = normalize(x, mean, std, channels=channels)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@dataclass
class StepResult:
    """What one step did: `finite` False means the loss was NaN/inf and no update was made."""

    finite: bool
    loss: float  # the batch's mean loss (nan/inf when not finite)
    correct: int  # top-1 hits in the batch (0 when not finite)
    count: int  # images in the batch


class TrainStep:
    """One optimizer step on a uint8 batch: augment, normalise (and resize for progressive
    resizing), forward and loss under autocast (the loss in float32), backward through the scaler,
    update, schedule, weight average. A non-finite loss makes no update (the schedule still
    advances, so a skipped step keeps the run's timeline)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        scaler: torch.amp.GradScaler,
        criterion: nn.Module,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
        mean,
        std,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        channels_last: bool,
        ema=None,
        ema_source: nn.Module | None = None,
        channels: int = 3,
        mixup: float = 0.0,
    ):
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.criterion, self.augment, self.mean, self.std = criterion, augment, mean, std
        self.device, self.amp_dtype, self.channels_last = device, amp_dtype, channels_last
        self.ema, self.ema_source = ema, ema_source if ema_source is not None else model
        self.channels, self.mixup = channels, mixup

    def mix(self, x: torch.Tensor, gen: torch.Generator):
        """Mixup's draw from `gen` (so a resumed or repeated run mixes the same way): lambda from
        Beta(a, a), folded to >= 0.5 (fastai's choice: the batch's own labels stay the larger
        part), and a permutation of the batch. Returns the blended batch, lambda, the permutation."""
        seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())
        lam = float(np.random.default_rng(seed).beta(self.mixup, self.mixup))
        lam = max(lam, 1.0 - lam)
        perm = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
        return x.mul(lam).add_(x[perm], alpha=1.0 - lam), lam, perm

    def inputs(self, x: torch.Tensor, gen: torch.Generator, size: int | None = None) -> torch.Tensor:
        """A uint8 batch on the device -> augmented, normalised model input, resized to `size`
        (progressive resizing) when that differs from the batch's own size."""
        x = prepare(self.augment(x, gen), self.mean, self.std, self.channels_last, self.channels)
        if size is not None and size != x.shape[-1]:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x

    def forward_loss(self, x: torch.Tensor, y: torch.Tensor):
        with autocast_ctx(self.device, self.amp_dtype):
            out = self.model(x)
            loss = self.criterion(out.float(), y)
        return out, loss

    def update(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, size: int | None = None) -> StepResult:
        x = self.inputs(x, gen, size)
        if self.mixup > 0:  # loss: lam * CE(y) + (1 - lam) * CE(y[perm]); accuracy counted on y
            x, lam, perm = self.mix(x, gen)
            out, loss = self.forward_loss(x, y)
            loss = loss * lam + self.criterion(out.float(), y[perm]) * (1.0 - lam)
        else:
            out, loss = self.forward_loss(x, y)
        value = loss.item()
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            return StepResult(False, value, 0, y.numel())
        self.update(loss)
        self.scheduler.step()
        if self.ema is not None:
            self.ema.step(self.ema_source)
        return StepResult(True, value, int((out.argmax(1) == y).sum().item()), y.numel())
