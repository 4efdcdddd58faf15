"""Muon for convolution filters, with SGD (momentum, Nesterov) for every other parameter, as one
torch optimizer (so the trainer's one scheduler, gradient scaler, Lookahead and checkpoint work
unchanged).

Muon (Keller Jordan et al., 2024, "Muon: an optimizer for hidden layers in neural networks"): the
momentum of a weight's gradient, viewed as a matrix (out_channels, in_channels * k * k), is
replaced by its nearest semi-orthogonal matrix, approximated by a few Newton-Schulz iterations;
every singular direction then moves by about the same amount. As in airbench94_muon (the 2.59-second
CIFAR-10 record on an A100), each filter tensor is also rescaled to norm sqrt(out_channels) before
its step, so the step size, not weight decay, sets how far the filters move.

torch.optim.Muon (torch >= 2.9) takes 2-d parameters only and has no weight rescaling, so it does
not fit convolution filters; this is this project's own code after the published algorithm.
Groups with `muon: True` get the Muon update, the others plain SGD with torch's semantics
(coupled weight decay, dampening 0, the first step's buffer equal to the gradient).
"""

from __future__ import annotations

import torch

# the quintic iteration's coefficients (Jordan 2024): chosen for a steep slope at zero, so that
# three iterations bring every singular value into roughly [0.5, 1.5]
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(
    g: torch.Tensor, steps: int = 3, eps: float = 1e-7, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """An approximation of U V^T for the 2-d g = U S V^T, computed in `dtype`: float32 by default
    (on CPUs without native bfloat16 faster than it), bfloat16 where it is native (the published
    Muon's choice; benchmarks/muon_ns.py: 2.6 times faster for XResNet-18 on a CPU with AVX512-BF16)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    x = x / (x.norm() + eps)  # every singular value <= 1
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * (s @ s)) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 0.0,
                 ns_steps: int = 3, ns_dtype: torch.dtype = torch.float32):  # fmt: skip
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(
                f"Muon: bad lr {lr}, momentum {momentum}, weight_decay {weight_decay} or ns_steps {ns_steps}"
            )
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, muon=False,
                        ns_steps=ns_steps)  # fmt: skip
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype  # not a group setting: a property of the machine, not saved with the state
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon: a muon group holds only matrices or filters (2-d or more)")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if wd and not group["muon"]:
                    g = g.add(p, alpha=wd)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    buf = state["momentum_buffer"] = g.clone()
                else:
                    buf = state["momentum_buffer"].mul_(m).add_(g)
                d = g.add(buf, alpha=m) if group["nesterov"] else buf
                if group["muon"]:
                    p.mul_(p.shape[0] ** 0.5 / p.norm().clamp_min(1e-12))
                    d = orthogonalize(d.reshape(len(d), -1), group["ns_steps"], dtype=self.ns_dtype).view_as(p)
                p.add_(d, alpha=-lr)
        return loss
