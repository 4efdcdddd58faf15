"""Time of Muon's orthogonalisation (engine/muon.py) for all the convolution filters of a model,
in float32 against bfloat16 (`--muon-ns-dtype fp32` against `auto` under bf16 autocast).

    .venv/bin/python benchmarks/muon_ns.py xresnet18_mish speednet

One optimizer step's worth of work per call: every 4-d weight of the model, a random gradient of
its shape viewed as (out_channels, in_channels * k * k), three Newton-Schulz steps. The figure is
the median of 5 windows of one call each after one warm-up call; the relative difference is
||bf16 - fp32|| / ||fp32|| over all the filters. The step it is added to is `torchcls bench`'s.
"""

import argparse
import statistics
import time

import torch

from torchcls.engine.muon import orthogonalize
from torchcls.engine.setup import hardware_summary
from torchcls.models import create_model


def time_ns(grads: list[torch.Tensor], dtype: torch.dtype, windows: int) -> float:
    def once() -> float:
        start = time.perf_counter()
        for g in grads:
            orthogonalize(g, dtype=dtype)
        return time.perf_counter() - start

    once()  # warm-up
    return statistics.median(once() for _ in range(windows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archs", nargs="+")
    ap.add_argument("--windows", type=int, default=5)
    args = ap.parse_args()
    print(hardware_summary(torch.device("cpu"), 1))
    for arch in args.archs:
        torch.manual_seed(0)
        filters = [p for p in create_model(arch, num_classes=10).parameters() if p.ndim == 4 and p.requires_grad]
        grads = [torch.randn_like(p).reshape(len(p), -1) for p in filters]
        t32, t16 = (time_ns(grads, dt, args.windows) for dt in (torch.float32, torch.bfloat16))
        o32 = torch.cat([orthogonalize(g).flatten() for g in grads])
        o16 = torch.cat([orthogonalize(g, dtype=torch.bfloat16).flatten() for g in grads])
        diff = float((o16 - o32).norm() / o32.norm())
        n = sum(p.numel() for p in filters)
        print(f"{arch}: {len(filters)} filters, {n:,} weights; fp32 {t32 * 1e3:.0f} ms, bf16 {t16 * 1e3:.0f} ms "
              f"(fp32/bf16 {t32 / t16:.2f}); relative difference {diff:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
