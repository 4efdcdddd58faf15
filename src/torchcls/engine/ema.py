"""Exponential moving average (EMA) of a model's weights, evaluated in place of the model.

    ema = ModelEma(model, decay=0.99, every=5)
    ...after each optimizer step: ema.step(model)

Every `every` optimizer steps the average moves towards the model's current parameters and
floating-point buffers (BatchNorm running statistics): avg = d * avg + (1 - d) * weights, with
d = min(decay, (1 + n) / (10 + n)) after n updates, so early on the average follows the model
closely (timm's and the torchvision references' warm-up). Integer buffers are copied.
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as tdist
import torch.nn as nn


class ModelEma:
    def __init__(self, model: nn.Module, decay: float, every: int = 1):
        if not 0.0 < decay < 1.0 or every < 1:
            raise ValueError("EMA decay must be in (0, 1) and its interval at least 1 step")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.every = decay, every
        self.steps = 0  # optimizer steps seen
        self.updates = 0

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        self.steps += 1
        if self.steps % self.every:
            return
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for avg, cur in zip(self.module.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(cur.detach(), 1.0 - d)
            else:
                avg.copy_(cur)

    @torch.no_grad()
    def sync_from_rank0(self) -> None:
        """Under torchrun: every process takes rank 0's average (BatchNorm statistics differ between
        processes between DDP's broadcasts, so their averages drift apart)."""

        if tdist.is_available() and tdist.is_initialized():
            for t in self.module.state_dict().values():
                tdist.broadcast(t, src=0)

    def state_dict(self) -> dict:
        return {"state_dict": self.module.state_dict(), "steps": self.steps, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["state_dict"])
        self.steps, self.updates = int(state["steps"]), int(state["updates"])
