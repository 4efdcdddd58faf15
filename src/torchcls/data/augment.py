"""Batched augmentation on the device: whole (N, C, H, W) batches, no per-image Python loop.

Every random draw comes from an explicit torch.Generator living on the batch's device, so the
same seed gives the same output. All functions work on uint8 and floating batches, CPU and CUDA,
and return a new tensor (the input is not modified).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(x: torch.Tensor, generator: torch.Generator | None) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"the generator is on {generator.device} but the batch is on {x.device}")


def _randint(high: int, n: int, generator, device) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=generator, device=device)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pad each image with `padding` zeros on every side and take an HxW window at a random offset
    (uniform over the (2p+1)^2 offsets, drawn per sample): torchvision RandomCrop(H, padding=p)
    for each image, done for the whole batch by one gather."""
    _check(x, generator)
    if padding <= 0:
        return x.clone()
    n, c, h, w = x.shape
    span = 2 * padding + 1
    dy = _randint(span, n, generator, x.device)
    dx = _randint(span, n, generator, x.device)
    return shift_crop(x, padding, dy, dx)


def shift_crop(x: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """The HxW window at row dy[i], column dx[i] of the zero-padded image i (0 <= d <= 2*padding)."""
    n, c, h, w = x.shape
    wp = w + 2 * padding
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    idx = (dy.view(n, 1, 1) + rows.view(1, h, 1)) * wp + (dx.view(n, 1, 1) + cols.view(1, 1, w))
    idx = idx.view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, -1).gather(2, idx).view(n, c, h, w)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability p (drawn per sample)."""
    _check(x, generator)
    mask = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a size x size square per image (DeVries & Taylor 2017): its centre is uniform over the
    image, and the part falling outside the image is dropped (so squares at a border are smaller)."""
    _check(x, generator)
    if size <= 0:
        return x.clone()
    n, c, h, w = x.shape
    cy = _randint(h, n, generator, x.device)
    cx = _randint(w, n, generator, x.device)
    y0, x0 = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=x.device).view(1, h)
    cols = torch.arange(w, device=x.device).view(1, w)
    my = (rows >= y0.view(n, 1)) & (rows < (y0 + size).view(n, 1))
    mx = (cols >= x0.view(n, 1)) & (cols < (x0 + size).view(n, 1))
    mask = my.view(n, 1, h, 1) & mx.view(n, 1, 1, w)
    return x.masked_fill(mask, 0)


class BatchAugment:
    """The training augmentation: random crop with zero padding, horizontal flip, cutout.

    aug = BatchAugment(crop_padding=4, flip=True, cutout=0); x = aug(x_uint8, generator)
    Output has x's dtype, shape and device; with crop_size C (smaller than the image's H), the
    output is a random CxC window at an offset uniform in [-crop_padding, H - C + crop_padding].
    """

    def __init__(self, crop_padding: int = 4, flip: bool = True, cutout: int = 0, crop_size: int = 0):
        if crop_padding < 0 or cutout < 0 or crop_size < 0:
            raise ValueError("crop_padding, cutout and crop_size must be >= 0")
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.cutout = int(cutout)
        self.crop_size = int(crop_size)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(x, generator)
        h = x.shape[-1]
        if self.crop_size and self.crop_size < h:
            if (h - self.crop_size) % 2:
                raise ValueError(f"crop_size {self.crop_size} must differ from the image size {h} by an even number")
            extra = (h - self.crop_size) // 2
            x = random_crop(x, self.crop_padding + extra, generator)
            x = x[..., extra : extra + self.crop_size, extra : extra + self.crop_size]
        elif self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        if self.cutout:
            x = cutout(x, self.cutout, generator)
        return x

    def __repr__(self) -> str:
        return (
            f"BatchAugment(crop_padding={self.crop_padding}, flip={self.flip}, cutout={self.cutout}, "
            f"crop_size={self.crop_size})"
        )
