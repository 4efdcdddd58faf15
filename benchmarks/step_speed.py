"""Training-step throughput of one model under each speed setting (fp32/bf16 autocast, NCHW/
channels_last, eager/torch.compile), on synthetic batches, in one process, so the ratios compare.

    .venv/bin/python benchmarks/step_speed.py --arch resnet20 --batch 128 256 --compile

Each figure is the median over --steps timed steps after --warmup steps (compile time is reported
separately). This is what the defaults of `--amp auto` and `--channels-last auto` rest on.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

from torchcls.models import create_model


def measure(arch, batch, size, amp, channels_last, compiled, steps, warmup):
    torch.manual_seed(0)
    model = create_model(arch)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    t_first = time.perf_counter()
    for i in range(warmup + steps):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
        if i == 0:
            first = time.perf_counter() - t_first
    return batch / statistics.median(times[warmup:]), first


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch", type=int, nargs="+", default=[128])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    a = p.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.arch}, {a.size}px, "
        f"median of {a.steps} steps after {a.warmup} warm-up steps"
    )
    print("| batch | precision | memory format | mode | train images/s | first step (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in a.batch:
        settings = [(amp, cl, False) for amp in (False, True) for cl in (False, True)]
        if a.compile:
            settings.append((True, True, True))
        for amp, cl, comp in settings:
            ips, first = measure(a.arch, batch, a.size, amp, cl, comp, a.steps, a.warmup)
            print(
                f"| {batch} | {'bf16 autocast' if amp else 'fp32'} | {'channels_last' if cl else 'NCHW'} | "
                f"{'compile' if comp else 'eager'} | {ips:.0f} | {first:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
