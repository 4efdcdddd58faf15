"""Training images/s of an ImageNet-style folder: the reference data path, torchcls's store, and no data at all.

    .venv/bin/python benchmarks/folder_throughput.py --data DIR [--sizes 128 224] [--batch 64]

DIR is an ImageNet-style folder (train/ and val/; the issue's study uses the unpacked
imagewoof2-160/). For each training size, four loops train the same network (default resnet18)
in one process, alternating window by window (median of --windows windows of --steps steps, each
loop warmed up first):

  a      the reference: torchvision ImageFolder + RandomResizedCrop + RandomHorizontalFlip +
         ToTensor + Normalize in a DataLoader (-j workers, shuffled), float32, NCHW, plain SGD,
         as the original imagenet.py
  b      torchcls from its store (built once, data/store.py) with its defaults (amp auto,
         channels_last auto): the Run and TrainStep that `torchcls train` builds
  b-fp32 the same with --amp off (the same precision as a)
  c      the same model and settings as b on one batch already in memory, stepped again and
         again: the limit where data cost nothing

Prints a markdown row per size and the ratios b/a, b-fp32/a and b/c last (goal: b/c >= 0.9, the
data path costing at most a tenth of a step). While the other loops run, a's DataLoader workers
fill their prefetch queues (2 batches each), taking a little CPU from the windows that follow.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from torchcls.commands.bench import _alternate, _forever, our_loop
from torchcls.config import build_config
from torchcls.data.build import build_data
from torchcls.data.folder import IMAGENET_MEAN, IMAGENET_STD
from torchcls.engine.setup import build_model, cpu_isa, cpu_model, resolve_device


def reference(cfg, n_classes: int, size: int, workers: int, device, seed: int):
    torch.manual_seed(seed)
    model = build_model(cfg, n_classes, 3).to(device)
    tf = transforms.Compose([
        transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    ds = datasets.ImageFolder(str(Path(cfg.data_dir) / "train"), tf)
    loader = DataLoader(ds, batch_size=cfg.train_batch, shuffle=True, num_workers=workers, drop_last=True,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    crit = nn.CrossEntropyLoss()
    model.train()

    def step(x, y):
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss = crit(out, y)
        loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return y.numel()

    return step, _forever(loader)


def in_memory(batch):
    while True:
        yield batch


def measure(args, size: int) -> dict:
    overrides = dict(
        dataset="imagenet", data_dir=args.data, arch=args.arch, train_batch=args.batch, test_batch=args.batch,
        train_size=size, val_size=size, val_resize=round(size * 8 / 7), store_max_size=args.store_max_size,
        lr=0.1, seed=0, epochs=1, threads=args.threads, workers=args.workers,
    )  # fmt: skip
    cfg = build_config(overrides)
    cfg32 = dataclasses.replace(cfg, amp="off")
    device = resolve_device(cfg.device, cfg.gpu_id)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    data = build_data(cfg, 0, 0, 1, device, log=lambda m: print(m, file=sys.stderr))
    step_b, batches_b, run_b = our_loop(cfg, data, device, 0)
    step_b32, batches_b32, _ = our_loop(cfg32, data, device, 0)
    step_c, _, _ = our_loop(cfg, data, device, 0)
    data.train.set_epoch(99)
    fixed = next(iter(data.train))
    loops = {
        "a": reference(cfg, len(data.classes), size, args.workers, device, 0),
        "b": (step_b, batches_b),
        "b-fp32": (step_b32, batches_b32),
        "c": (step_c, in_memory(fixed)),
    }
    figures, _ = _alternate(loops, args.windows, args.steps, args.warmup, device)
    med = {k: statistics.median(v) for k, v in figures.items()}
    return {"size": size, "amp": str(run_b.amp_dtype).replace("torch.", "") if run_b.amp_dtype else "off",
            "channels_last": run_b.channels_last, "median": med, "windows": figures}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="ImageNet-style folder (train/ and val/)")
    ap.add_argument("-a", "--arch", default="resnet18")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4, help="steps per window")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("-j", "--workers", type=int, default=2, help="the reference's DataLoader workers")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--store-max-size", type=int, default=0, help="the store's size (0: the run's default)")
    args = ap.parse_args()
    rows = [measure(args, s) for s in args.sizes]
    print(f"{args.arch}, batch {args.batch}, {cpu_model()} ({cpu_isa()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; median of {args.windows} windows of {args.steps} steps, "
          f"alternating; reference -j {args.workers}")  # fmt: skip
    print(
        "| size | b: amp, channels_last | a: reference img/s | b: store img/s | b-fp32 img/s | c: in memory img/s "
        "| b/a | b-fp32/a | b/c |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        m = r["median"]
        print(f"| {r['size']} | {r['amp']}, {'on' if r['channels_last'] else 'off'} | {m['a']:.1f} | {m['b']:.1f} | "
              f"{m['b-fp32']:.1f} | {m['c']:.1f} | {m['b'] / m['a']:.2f} | {m['b-fp32'] / m['a']:.2f} | "
              f"{m['b'] / m['c']:.2f} |")  # fmt: skip
    for r in rows:
        w = "; ".join(f"{k}: " + ", ".join(f"{v:.1f}" for v in vs) for k, vs in r["windows"].items())
        print(f"windows at {r['size']} px (img/s): {w}")
    for r in rows:
        m = r["median"]
        print(
            f"{r['size']} px: b/a {m['b'] / m['a']:.2f}  b-fp32/a {m['b-fp32'] / m['a']:.2f}  b/c {m['b'] / m['c']:.2f}"
        )


if __name__ == "__main__":
    main()
