"""Top-1/top-5 and loss over a whole split, reduced across ranks; optional flip test-time augmentation."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchcls.engine.distributed import SINGLE, DistInfo, all_reduce_sum
from torchcls.engine.step import autocast_ctx, prepare


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x translated by (dy, dx) pixels, the uncovered border filled by reflection."""
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def tta_logits(
    model: nn.Module, x: torch.Tensor, flip: bool = False, shift: int = 0, below: float = 0.0
) -> torch.Tensor:
    """Test-time augmentation: the log of the averaged class probabilities over the views. Views:
    the image (and its mirror image with `flip`); with `shift` also the image translated by `shift`
    pixels up-left and down-right (each with its mirror image too with `flip`), weighted so the
    unshifted views count half. With `below` > 0 (selective TTA) only the images whose single view
    gives its top class a probability under `below` get the other views; the rest keep the log of
    their single view's probabilities."""
    if below > 0 and (flip or shift):
        out = model(x).float().log_softmax(1)
        unsure = (out.max(1).values < math.log(below)).nonzero().squeeze(1)
        if len(unsure):
            out[unsure] = tta_logits(model, x[unsure], flip, shift).to(out.dtype)
        return out

    def views(v):
        probs = model(v).float().softmax(1)
        if flip:
            probs = (probs + model(v.flip(3)).float().softmax(1)) / 2
        return probs

    if not flip and not shift:
        return model(x).float()
    probs = views(x)
    if shift:
        probs = probs / 2 + (views(_shift(x, -shift, -shift)) + views(_shift(x, shift, shift))) / 4
    return probs.log()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    *,
    mean,
    std,
    device: torch.device,
    amp_dtype=None,
    channels_last: bool = False,
    tta_flip: bool = False,
    tta_shift: int = 0,
    tta_below: float = 0.0,
    dist_info: DistInfo = SINGLE,
    prepared: bool = False,
    channels: int = 3,
) -> dict:
    """Evaluate over `batches` of (images, labels). Every rank passes its own share; the sums are
    all-reduced so every rank returns the same figures over the whole split."""
    was_training = model.training
    model.eval()
    loss_sum = top1 = top5 = count = 0.0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if not prepared:
            x = prepare(x, mean, std, channels_last, channels)
        with autocast_ctx(device, amp_dtype):
            logits = tta_logits(model, x, tta_flip, tta_shift, tta_below)
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
    return {"loss": loss_sum / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count, "count": int(count)}
