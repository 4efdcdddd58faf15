"""`torchcls bench`: training throughput (images/s) and peak memory of a model on a data set.

    torchcls bench -a resnet20 --dataset cifar10 --train-batch 128 --vs-reference

Takes the model and data flags of `torchcls train` with the same meaning (with neither -a nor -d
the main recipe applies, as for `train`). A step counts everything an epoch costs: index the
in-memory data, batched augmentation on the device, normalise, forward, backward, optimizer step
(and the loss read-back the training loop does). It is the training step itself: the run is built
by engine/setup.py's build_run, as `torchcls train` builds it, and the timed call is its TrainStep.
The figure is the median over --windows timed windows of --steps steps each, after --warmup
steps. Progressive resizing (--min-train-size) is not applied: steps run at the full training size.

--vs-reference also runs, in the same process and alternating window by window with ours, the
original pytorch-classification loop: per-image PIL transforms (RandomCrop(H, padding=4),
RandomHorizontalFlip, ToTensor, Normalize) over the same uint8 images in a torch DataLoader
(shuffle, -j workers, at most one per CPU), float32, NCHW, plain SGD, same model and batch size.

Peak memory: on CUDA torch.cuda.max_memory_allocated (reset before each loop's windows); on a CPU
the growth of the process's ru_maxrss high-water mark. That mark is process-wide, so on a CPU with
--vs-reference ours is taken over its warm-up steps (before the reference runs), and the
reference's figure (measured after ours) is max(ours, reference) for the main process, and its
DataLoader workers (separate processes) are not counted. While ours runs, the reference's workers
fill their prefetch queue (2 batches each), so a reference window may start with a few batches
ready and ours may lose a little CPU to them. Measured on a 2-core CPU (docs/RESULTS.md), windows
of 40 steps instead of 10 did not change the ratio beyond its run-to-run spread.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader

from torchcls.commands.train import add_train_arguments, config_from_args
from torchcls.config import TrainConfig
from torchcls.data.build import build_data
from torchcls.data.datasets import is_folder_dataset
from torchcls.engine.runtime import tune_malloc
from torchcls.engine.setup import amp_name, build_model, build_run, hardware_summary, init_from_data, resolve_device
from torchcls.engine.step import autocast_ctx, prepare
from torchcls.errors import UserError
from torchcls.models import input_channels

BENCH_KEYS = ("bench_steps", "bench_windows", "bench_warmup", "bench_json", "bench_vs_reference", "bench_eval")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p)
    g = p.add_argument_group("bench")
    g.add_argument("--steps", dest="bench_steps", type=int, default=10, help="steps per timed window (default 10)")
    g.add_argument(
        "--windows",
        dest="bench_windows",
        type=int,
        default=5,
        help="timed windows; the figure is their median (default 5)",
    )
    g.add_argument(
        "--warmup",
        dest="bench_warmup",
        type=int,
        default=3,
        help="untimed steps before the first window of each loop (default 3)",
    )
    g.add_argument(
        "--vs-reference",
        dest="bench_vs_reference",
        action="store_true",
        help="also time the original's loop (PIL transforms in a DataLoader, fp32, NCHW, plain SGD) "
        "and print the ratio ours/reference last",
    )
    g.add_argument(
        "--eval",
        dest="bench_eval",
        action="store_true",
        help="also time evaluation (batches of --test-batch, no augmentation)",
    )
    g.add_argument("--json", dest="bench_json", action="store_true", help="print the result as JSON")


# ----------------------------------------------------------------------------- helpers


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _maxrss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


class _Memory:
    """Peak memory of a loop: CUDA max_memory_allocated, or growth of ru_maxrss over a baseline."""

    def __init__(self, device):
        self.device = device
        self.base = _maxrss_mb()

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return max(0.0, _maxrss_mb() - self.base)


def _forever(loader):
    """Batches without end: epoch after epoch (a new order each epoch, as in training)."""
    for epoch in itertools.count():
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from (loader.iterate() if hasattr(loader, "iterate") else loader)


def _time_windows(step, batches, n_windows, steps, device):
    """Generator: each next() runs one timed window of `steps` steps and yields its images/s."""
    for _ in range(n_windows):
        _sync(device)
        t0 = time.perf_counter()
        n = 0
        for _ in range(steps):
            n += step(*next(batches))
        _sync(device)
        yield n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- the two loops


def our_loop(cfg: TrainConfig, data, device, seed: int):
    """Our training step: the Run that `torchcls train` builds, and its TrainStep.
    Returns (step, batches, run)."""
    torch.manual_seed(seed)
    run = build_run(cfg, data, device)
    gen = torch.Generator(device=device).manual_seed(seed)

    def step(x, y):
        return run.step(x, y, gen).count

    run.model.train()
    return step, _forever(data.train), run


class PILImages:
    """The original's per-image data path over our in-memory uint8 images: like
    torchvision.datasets.CIFAR10, an HWC uint8 array turned into a PIL Image per sample, then the
    transforms. 1-channel images (Fashion-MNIST) are converted to RGB first, unless `rgb` is False
    (a model built for one channel)."""

    def __init__(self, images, labels, transform, rgb: bool = True):
        imgs = images.cpu()
        self.gray = imgs.shape[1] == 1
        self.to_rgb = self.gray and rgb
        self.data = imgs[:, 0].numpy() if self.gray else imgs.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.cpu().tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img = Image.fromarray(self.data[i])
        if self.to_rgb:
            img = img.convert("RGB")
        return self.transform(img), self.targets[i]


def reference_workers(requested: int) -> tuple[int, str]:
    n_cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested > n_cpu:
        return n_cpu, f"-j {requested} clamped to the {n_cpu} CPUs"
    return requested, f"-j {requested}"


def reference_loop(cfg: TrainConfig, data, device, seed: int, workers: int, train: bool = True):
    """The original pytorch-classification loop. Returns (step, batches, model, dataloader)."""
    from torchvision import transforms  # noqa: PLC0415 (the reference loop alone needs torchvision, a slow import)

    src = data.train if train else data.select
    size = int(src.images.shape[-1])
    torch.manual_seed(seed)
    model = build_model(cfg, len(data.classes), len(data.mean)).to(device)
    init_from_data(model, data)
    mean, std = list(data.mean), list(data.std)
    rgb = input_channels(model) == 3
    if len(mean) == 1 and rgb:  # converted to RGB: the same statistics on each channel
        mean, std = mean * 3, std * 3
    tail = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    head = [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()] if train else []
    ds = PILImages(src.images, src.labels, transforms.Compose(head + tail), rgb=rgb)
    batch = cfg.train_batch if train else cfg.test_batch
    loader = DataLoader(ds, batch_size=batch, shuffle=train, num_workers=workers, drop_last=False,
                        generator=torch.Generator().manual_seed(seed))  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    criterion = nn.CrossEntropyLoss()

    def step(x, y):
        x, y = x.to(device), y.to(device, non_blocking=True)
        out = model(x)
        loss = criterion(out, y)
        loss.item()
        (out.argmax(1) == y).sum().item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return y.numel()

    model.train()
    return step, _forever(loader), model, loader


def _eval_step(model, device, amp_dtype, channels_last, mean, std, prepared, channels=3):
    @torch.no_grad()
    def step(x, y):
        x, y = x.to(device), y.to(device)
        if not prepared:
            x = prepare(x, mean, std, channels_last, channels)
        with autocast_ctx(device, amp_dtype):
            out = model(x).float()
        (out.argmax(1) == y).sum().item()
        return y.numel()

    return step


def _alternate(loops: dict, windows: int, steps: int, warmup: int, device, memory=None, frozen=()) -> tuple:
    """Warm each loop up, then time `windows` windows of each, alternating window by window.
    Returns (images/s per window by loop, peak memory by loop)."""
    figures = {name: [] for name in loops}
    peaks = {name: 0.0 for name in loops}
    timers = {}
    for name, (step, batches) in loops.items():
        if memory is not None:
            memory.start()
        for _ in range(warmup):
            step(*next(batches))
        if memory is not None:
            peaks[name] = memory.peak_mb()
        timers[name] = _time_windows(step, batches, windows, steps, device)
    for _ in range(windows):
        for name in loops:
            if memory is not None:
                memory.start()
            figures[name].append(next(timers[name]))
            if memory is not None and name not in frozen:
                peaks[name] = max(peaks[name], memory.peak_mb())
    return figures, peaks


# ----------------------------------------------------------------------------- the command


def _bench_eval(cfg, data, device, seed, workers, run, vs_reference, windows, steps, warmup) -> dict:
    """Evaluation images/s (batches of --test-batch, no augmentation), ours and the reference's."""
    run.model.eval()
    step = run.step
    ours = _eval_step(run.model, device, run.amp_dtype, run.channels_last, data.mean, data.std, False, step.channels)
    ev = {"ours": (ours, _forever(data.select))}
    if vs_reference:
        _, _, rmodel, rloader = reference_loop(cfg, data, device, seed, workers, train=False)
        rmodel.eval()
        ev["reference"] = (_eval_step(rmodel, device, None, False, None, None, True), _forever(rloader))
    figures, _ = _alternate(ev, windows, steps, warmup, device)
    return {name: statistics.median(v) for name, v in figures.items()}


def bench(cfg: TrainConfig, *, steps=10, windows=5, warmup=3, vs_reference=False, eval_too=False) -> dict:
    if min(steps, windows) < 1 or warmup < 0:
        raise UserError("--steps and --windows must be at least 1, --warmup at least 0")
    if vs_reference and is_folder_dataset(cfg.dataset):
        raise UserError("--vs-reference is for the in-memory data sets (cifar10, cifar100, fashion-mnist)")
    threads_before = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    tune_malloc(cfg.malloc)  # process-wide: the reference loop (and its forked workers) run under it too
    try:
        device = resolve_device(cfg.device, cfg.gpu_id)
        seed = cfg.seed if cfg.seed is not None else 0
        torch.manual_seed(seed)
        data = build_data(cfg, seed, 0, 1, device)
        if len(data.train) < 1:
            raise UserError(f"{data.train_size} training images are fewer than one batch of {cfg.train_batch}")
        workers, workers_note = reference_workers(cfg.workers)
        step, batches, run = our_loop(cfg, data, device, seed)
        loops = {"ours": (step, batches)}
        if vs_reference:
            loops["reference"] = reference_loop(cfg, data, device, seed, workers)[:2]
        # on a CPU the high-water mark is the process's: ours' peak is the one before the reference ran
        frozen = {"ours"} if vs_reference and device.type != "cuda" else set()
        memory = _Memory(device)  # the baseline: data and both models in place
        figures, peaks = _alternate(loops, windows, steps, warmup, device, memory, frozen)
        result = {
            "arch": cfg.arch, "dataset": cfg.dataset, "train_images": data.train_size, "batch": cfg.train_batch,
            "device": device.type, "threads": torch.get_num_threads(), "steps": steps, "windows": windows,
            "warmup": warmup, "memory_measure": "torch.cuda.max_memory_allocated" if device.type == "cuda"
            else "ru_maxrss growth (process-wide high-water mark)",
            "ours": {"images_per_s": statistics.median(figures["ours"]), "windows_images_per_s": figures["ours"],
                     "peak_memory_mb": peaks["ours"], "amp": amp_name(run.amp_dtype),
                     "channels_last": run.channels_last, "compile": bool(cfg.compile),
                     "augmentation": f"batched on {device.type}"},
        }  # fmt: skip
        if vs_reference:
            result["reference"] = {
                "images_per_s": statistics.median(figures["reference"]), "peak_memory_mb": peaks["reference"],
                "windows_images_per_s": figures["reference"], "workers": workers, "workers_note": workers_note,
                "amp": "off", "channels_last": False, "compile": False, "augmentation": "per-image PIL in a DataLoader",
            }  # fmt: skip
        if eval_too:
            ev = _bench_eval(cfg, data, device, seed, workers, run, vs_reference, windows, steps, warmup)
            for name, v in ev.items():
                result[name]["eval_images_per_s"] = v
                result[name]["eval_batch"] = cfg.test_batch
        if vs_reference:
            result["ratio"] = result["ours"]["images_per_s"] / result["reference"]["images_per_s"]
        result["hardware"] = hardware_summary(device, 1)
        result["ours"]["malloc"] = result["hardware"]["malloc"]
        return result
    finally:
        torch.set_num_threads(threads_before)


def _figure_line(name: str, d: dict) -> str:
    windows = ", ".join(f"{v:.0f}" for v in d["windows_images_per_s"])
    s = f"{name + ':':<11}{d['images_per_s']:.1f} images/s (windows: {windows}), "
    s += f"peak memory {d['peak_memory_mb']:.0f} MB"
    if "eval_images_per_s" in d:
        s += f"; eval {d['eval_images_per_s']:.1f} images/s (batch {d['eval_batch']})"
    return s


def format_result(r: dict) -> str:
    o, hw = r["ours"], r.get("hardware", {})
    machine = f"{hw.get('cpu', '?')} ({hw.get('cpu_isa', '?')})" + (f", GPU {hw['gpu']}" if hw.get("gpu") else "")
    alternating = ", ours and the reference alternating" if "reference" in r else ""
    lines = [
        f"torchcls bench: {r['arch']} on {r['dataset']} ({r['train_images']} training images), batch {r['batch']}, "
        f"{r['device']}, {r['threads']} threads; median of {r['windows']} windows of {r['steps']} steps after "
        f"{r['warmup']} warm-up steps{alternating}",
        f"machine:   {machine}",
        f"ours:      amp {o['amp']}, channels_last {'on' if o['channels_last'] else 'off'}, "
        f"compile {'on' if o['compile'] else 'off'}, augmentation {o['augmentation']}, malloc {o['malloc']}",
    ]
    if "reference" in r:
        ref = r["reference"]
        lines.append(f"reference: fp32, NCHW, plain SGD, per-image PIL transforms in a DataLoader with "
                     f"{ref['workers']} workers ({ref['workers_note']})")  # fmt: skip
    lines.append(_figure_line("ours", o))
    if "reference" in r:
        lines.append(_figure_line("reference", r["reference"]))
    cpu_note = "; on a CPU ours is over its warm-up steps, the reference's is max(ours, reference) without its "
    cpu_note += "worker processes"
    lines.append(
        f"peak memory: {r['memory_measure']}" + (cpu_note if "reference" in r and r["device"] != "cuda" else "")
    )
    if "reference" in r:
        lines.append(f"ratio ours/reference: {r['ratio']:.2f}")
    return "\n".join(lines)


def run(ns: argparse.Namespace) -> int:
    opts = {k: getattr(ns, k) for k in BENCH_KEYS}
    cfg = config_from_args(argparse.Namespace(**{k: v for k, v in vars(ns).items() if k not in BENCH_KEYS}))
    r = bench(cfg, steps=opts["bench_steps"], windows=opts["bench_windows"], warmup=opts["bench_warmup"],
              vs_reference=opts["bench_vs_reference"], eval_too=opts["bench_eval"])  # fmt: skip
    print(json.dumps(r, indent=2) if opts["bench_json"] else format_result(r))
    return 0
