"""Top-1/top-5 and loss over a whole split, reduced across ranks; optional flip test-time augmentation."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchcls.data.augment import normalize
from torchcls.engine.distributed import DistInfo, all_reduce_sum


def autocast_ctx(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def prepare(x: torch.Tensor, mean, std, channels_last: bool) -> torch.Tensor:
    """uint8 batch on the device -> normalised float input in the model's memory format."""
    x = normalize(x, mean, std)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def evaluate(model: nn.Module, batches, *, mean, std, device: torch.device, amp_dtype=None,
             channels_last: bool = False, tta_flip: bool = False, dist_info: DistInfo = DistInfo(),
             prepared: bool = False) -> dict:
    """Evaluate over `batches` of (images, labels). Every rank passes its own share; the sums are
    all-reduced so every rank returns the same figures over the whole split."""
    was_training = model.training
    model.eval()
    loss_sum = top1 = top5 = count = 0.0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if not prepared:
            x = prepare(x, mean, std, channels_last)
        with autocast_ctx(device, amp_dtype):
            logits = model(x).float()
            if tta_flip:
                logits = (logits.softmax(1) + model(x.flip(3)).float().softmax(1)).div_(2).log()
        loss_sum += F.nll_loss(logits.log_softmax(1), y, reduction="sum").item()
        k = min(5, logits.shape[1])
        pred = logits.topk(k, dim=1).indices
        hit = pred.eq(y[:, None])
        top1 += hit[:, 0].sum().item()
        top5 += hit.any(1).sum().item()
        count += y.numel()
    loss_sum, top1, top5, count = all_reduce_sum([loss_sum, top1, top5, count], device, dist_info)
    model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "count": 0}
    return {"loss": loss_sum / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count,
            "count": int(count)}
