"""How long each row of the original's table takes on this CPU: the timing behind docs/RESULTS.md's
"Every row of the original's table" section.

    .venv/bin/python benchmarks/row_times.py OUT.jsonl                    # every CIFAR-10 row, --amp auto
    .venv/bin/python benchmarks/row_times.py OUT.jsonl --amp off alexnet  # some rows, float32

Each row's original recipe (`original/cifar10-<row>`) is built as `torchcls bench` builds it
(commands.bench.our_loop: engine/setup.py's run and its TrainStep, batched augmentation, autocast,
channels_last, SGD step) and timed on ONE thread, as images per CPU-second of this process
(`time.process_time`): a figure that another job on the other cores does not inflate, where a
two-thread wall-clock timing would be. The wall-clock figure of the same steps is recorded beside
it. Evaluation: forward passes of 100 test images. The heaviest rows are timed at a smaller batch
(SMALL_BATCH) and for 2-3 steps. One JSON line per row is appended to OUT.jsonl and a line printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import torch

from torchcls.commands.bench import _eval_step, our_loop
from torchcls.config import build_config
from torchcls.data.build import build_data
from torchcls.engine.runtime import tune_malloc
from torchcls.engine.setup import hardware_summary, resolve_device
from torchcls.report.original import ROWS

# row -> (timed steps, warm-up steps)
PLAN = {
    "alexnet": (12, 3), "vgg16": (4, 2), "vgg19_bn": (4, 2), "resnet20": (10, 3), "resnet56": (5, 2),
    "resnet110": (3, 1), "resnet1202": (2, 1), "preresnet110": (3, 1), "wrn28-10-drop": (2, 1),
    "resnext29-8x64d": (2, 1), "resnext29-16x64d": (2, 1), "densenet-bc-100-12": (4, 2),
    "densenet-bc-190-40": (2, 1), "mobilenet": (5, 2), "mobilenetv2": (4, 2), "shufflenetv2": (5, 2),
    "pnasnet": (4, 2),
}  # fmt: skip
SMALL_BATCH = {"resnet1202": 32, "wrn28-10-drop": 32, "resnext29-8x64d": 32, "densenet-bc-190-40": 16,
               "resnext29-16x64d": 16}  # fmt: skip


def time_row(key: str, data_dir: str, amp: str, device) -> dict:
    steps, warm = PLAN[key]
    row = next(r for r in ROWS if r.key == key)
    over = {"data_dir": data_dir, "threads": 1, "tensorboard": False, "plot": False, "amp": amp}
    if key in SMALL_BATCH:
        over["train_batch"] = SMALL_BATCH[key]
    cfg = build_config(over, recipe=row.recipe("cifar10"))
    data = build_data(cfg, 0, 0, 1, device)
    step, batches, run = our_loop(cfg, data, device, 0)
    for _ in range(warm):
        step(*next(batches))
    c0, t0, n = time.process_time(), time.perf_counter(), 0
    for _ in range(steps):
        n += step(*next(batches))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    model = run.eval_model()
    model.eval()
    ev = _eval_step(model, device, run.amp_dtype, run.channels_last, data.mean, data.std, False, run.step.channels)
    xs, ys = data.select.images[:100], data.select.labels[:100]
    ev(xs, ys)  # warm-up
    k = 1 if key in SMALL_BATCH else 3
    c1, t1 = time.process_time(), time.perf_counter()
    for _ in range(k):
        ev(xs, ys)
    ecpu, ewall = time.process_time() - c1, time.perf_counter() - t1
    return {
        "row": key, "recipe": row.recipe("cifar10"), "batch": cfg.train_batch, "amp": str(run.amp_dtype),
        "channels_last": run.channels_last, "threads": torch.get_num_threads(), "steps": steps, "warmup": warm,
        "images": n, "cpu_s": cpu, "wall_s": wall, "train_img_per_cpu_s": n / cpu, "train_img_per_wall_s": n / wall,
        "eval_img_per_cpu_s": 100 * k / ecpu, "eval_img_per_wall_s": 100 * k / ewall,
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hardware": hardware_summary(device, 1),
    }  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="JSON-lines file to append one line per row to")
    p.add_argument("rows", nargs="*", help=f"rows to time (default all): {', '.join(PLAN)}")
    p.add_argument("--amp", default="auto", choices=("auto", "off", "bf16"))
    p.add_argument("--data-dir", default="../shared/data", help="folder holding CIFAR-10 (default ../shared/data)")
    ns = p.parse_args(argv)
    unknown = sorted(set(ns.rows) - set(PLAN))
    if unknown:
        p.error(f"unknown rows {', '.join(unknown)}")
    torch.set_num_threads(1)
    tune_malloc("auto")
    device = resolve_device("cpu", None)
    for key in [k for k in PLAN if not ns.rows or k in ns.rows]:
        rec = time_row(key, ns.data_dir, ns.amp, device)
        with open(ns.out, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(
            f"{key:20s} b{rec['batch']:<4d} train {rec['train_img_per_cpu_s']:8.1f} img/cpu-s "
            f"({rec['train_img_per_wall_s']:7.1f} wall)  eval {rec['eval_img_per_cpu_s']:8.1f} img/cpu-s  "
            f"load {rec['loadavg'][0]}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
