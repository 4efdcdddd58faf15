"""Does glibc allocator tuning (`--malloc auto`) matter for a training step? Runs the bench's own
training step (`torchcls.commands.bench.our_loop`: ResNet-20, CIFAR-10, batch 128, bf16 autocast,
channels_last, torch.compile by default) in fresh processes, alternating `--malloc off` and
`auto`, because what we saw is a per-process mode: some processes run the compiled step much
slower than others without the tuning.

    .venv/bin/python benchmarks/malloc_modes.py --procs 5            # 5 processes of each setting

Prints one line per process (median images/s of its windows) and a summary per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, statistics, sys, time, torch
from torchcls.config import TrainConfig
from torchcls.data.build import build_data
from torchcls.commands.bench import our_loop
from torchcls.engine.runtime import tune_malloc
malloc, compile_, windows, steps = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
tune_malloc(malloc)
cfg = TrainConfig(dataset="cifar10", arch="resnet20", train_batch=128, compile=compile_, data_dir=sys.argv[5] or None,
                 amp="bf16", channels_last="on")
dev = torch.device("cpu")
data = build_data(cfg, 0, 0, 1, dev)
step, batches = our_loop(cfg, data, dev, 0)[:2]
for _ in range(3):
    step(*next(batches))
figs = []
for _ in range(windows):
    t0 = time.perf_counter()
    n = sum(step(*next(batches)) for _ in range(steps))
    figs.append(n / (time.perf_counter() - t0))
print(json.dumps({"malloc": malloc, "images_per_s": statistics.median(figs)}))
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=5, help="processes of each setting (default 5)")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--eager", action="store_true", help="time the eager step instead of the compiled one")
    p.add_argument("--data-dir", default=os.environ.get("TORCHCLS_DATA", ""))
    a = p.parse_args()
    results = {"off": [], "auto": []}
    for i in range(a.procs):
        for malloc in ("off", "auto"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    malloc,
                    "0" if a.eager else "1",
                    str(a.windows),
                    str(a.steps),
                    a.data_dir,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            results[malloc].append(r["images_per_s"])
            print(f"process {i + 1} --malloc {malloc:<4}: {r['images_per_s']:.0f} images/s", flush=True)
    for malloc, figs in results.items():
        print(
            f"--malloc {malloc}: median {statistics.median(figs):.0f}, range {min(figs):.0f}-{max(figs):.0f} "
            f"images/s over {len(figs)} processes"
        )


if __name__ == "__main__":
    main()
