"""Does a long run's memory stay flat? Train a tiny model for many epochs in one process and record
the resident memory (VmRSS from /proc/self/status) after each epoch.

    .venv/bin/python benchmarks/memory_flat.py                 # 60 epochs, about 1-2 minutes on 1 CPU thread
    .venv/bin/python benchmarks/memory_flat.py --epochs 200 --json rss.json

Each epoch trains on 256 Fashion-MNIST images, evaluates 256, writes checkpoint.pth.tar,
model_best.pth.tar (when better), log.txt and metrics.jsonl: everything a real epoch does, only
smaller. The first epochs warm up (allocator pools, lazily loaded kernels); the growth that matters
is from the end of the warm-up to the last epoch. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from torchcls.cli import build_parser
from torchcls.commands.train import config_from_args
from torchcls.engine.train import train


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5, help="epochs excluded from the growth figure")
    ap.add_argument("--arch", default="resnet20")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the per-epoch figures here")
    a = ap.parse_args(argv)
    if a.epochs <= a.warmup + 1:
        ap.error("--epochs must exceed --warmup + 1")

    rss = []
    with tempfile.TemporaryDirectory() as tmp:
        args = (
            f"-a {a.arch} --dataset fashion-mnist --train-subset 256 --test-subset 256 --train-batch 64 "
            f"--test-batch 256 --epochs {a.epochs} --lr 0.05 --lr-schedule cosine --manualSeed 0 "
            f"--plot off --tensorboard off --threads {a.threads} --amp off --log-interval 1e9"
        )
        cfg = config_from_args(build_parser().parse_args(["train", *shlex.split(args), "-c", tmp]))
        before = rss_mib()
        t0 = time.perf_counter()

        def record(epoch, row):
            rss.append(rss_mib())
            print(f"epoch {epoch:4d}  VmRSS {rss[-1]:8.1f} MiB  test top-1 {row['valid_acc']:.2f}%", flush=True)

        train(cfg, log=lambda *m: None, on_epoch_end=record)
        wall = time.perf_counter() - t0
    w = a.warmup
    after = rss[w:]  # epochs w+1 .. end
    xs = range(len(after))
    mx, my = sum(xs) / len(after), sum(after) / len(after)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, after, strict=True)) / sum((x - mx) ** 2 for x in xs)
    k = min(10, len(after) // 2)
    first, last = sum(after[:k]) / k, sum(after[-k:]) / k
    growth = last - first
    print(f"\nVmRSS before the run {before:.1f} MiB, after epoch 1 {rss[0]:.1f} MiB")
    print(
        f"after the {w}-epoch warm-up (epochs {w + 1}..{len(rss)}): min {min(after):.1f}  max {max(after):.1f} MiB; "
        f"mean of the first {k} {first:.1f}, of the last {k} {last:.1f} MiB: growth {growth:+.1f} MiB"
    )
    print(
        f"least-squares trend {slope * 1024:+.1f} KiB/epoch; {a.epochs} epochs in {wall:.0f}s, "
        f"python {sys.version.split()[0]}"
    )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "rss_mib": rss,
                    "before_mib": before,
                    "warmup": w,
                    "growth_mib": growth,
                    "trend_kib_per_epoch": slope * 1024,
                    "wall_s": wall,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
