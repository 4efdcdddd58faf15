"""Training images/s of an ImageNet-style folder run, with one process and with two under torchrun.

    .venv/bin/python benchmarks/imagenet_throughput.py [--data DIR] [--sizes 224 128] [--images 128]

DIR holds train/ and val/ (default: imagewoof-mini unpacked from $TORCHCLS_DATA/imagewoof-mini.tar
into a temporary folder). Each configuration is one short `torchcls train` epoch over --images
training images (the whole pipeline: crops from the decoded image store, built once before the
first configuration, or with --store off JPEG decode and crop in a DataLoader worker; normalisation on
the device, forward, backward, SGD step, DDP all-reduce with two processes); its images/s is the
epoch's, read from metrics.jsonl, so it includes the first (slower) step. --runs lists the
configurations as PROCESSESxTHREADS (torch threads per process; default 1x2 1x1 2x1 for 2 cores).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def find_data(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg)
    tar = Path(os.environ.get("TORCHCLS_DATA", ROOT.parent / "shared" / "data")) / "imagewoof-mini.tar"
    if not tar.is_file():
        sys.exit(f"no --data given and {tar} not found")
    with tarfile.open(tar) as t:
        t.extractall(tmp, filter="data")
    return tmp / "imagewoof-mini"


def one(data: Path, size: int, nproc: int, threads: int, args, tmp: Path) -> dict:
    run_dir = tmp / f"run-{size}-{nproc}-{threads}"
    cmd = [
        "-m",
        "torchcls",
        "train",
        "-a",
        args.arch,
        "--dataset",
        "imagenet",
        "--data",
        str(data),
        "--epochs",
        "1",
        "--train-subset",
        str(args.images),
        "--test-subset",
        str(args.val_images),
        "--train-batch",
        str(args.batch),
        "--test-batch",
        "50",
        "--train-size",
        str(size),
        "--val-size",
        str(size),
        "--val-resize",
        str(round(size * 256 / 224)),
        "-j",
        str(args.workers),
        "--threads",
        str(threads),
        "--amp",
        args.amp,
        "--seed",
        "0",
        "--tensorboard",
        "off",
        "--plot",
        "off",
        "--log-interval",
        "1000",
        "--store",
        args.store,
        "-c",
        str(run_dir),
    ]
    if args.store_max_size:
        cmd += ["--store-max-size", str(args.store_max_size)]
    launch = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
    t0 = time.time()
    p = subprocess.run(
        launch + cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)}
    )
    if p.returncode:
        sys.exit(f"failed: {' '.join(launch + cmd)}\n{(p.stdout + p.stderr)[-3000:]}")
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        "size": size,
        "procs": nproc,
        "threads": threads,
        "images_per_s": row["images_per_s"],
        "train_time": row["train_time"],
        "wall": time.time() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None)
    ap.add_argument("-a", "--arch", default="resnet18")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    ap.add_argument(
        "--runs",
        nargs="+",
        default=["1x2", "1x1", "2x1"],
        help="PROCESSESxTHREADS (threads per process) configurations to measure",
    )
    ap.add_argument("--images", type=int, default=128, help="training images per measurement")
    ap.add_argument("--val-images", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32, help="global batch")
    ap.add_argument("--workers", type=int, default=1, help="-j per process")
    ap.add_argument("--amp", default="off")
    ap.add_argument("--store", default="auto", help="auto (the decoded image store) | off (JPEGs every epoch) | PATH")
    ap.add_argument("--store-max-size", type=int, default=0, help="the store's shorter side (0: the run's default)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        data = find_data(args.data, tmp)
        runs = [tuple(int(v) for v in r.split("x")) for r in args.runs]
        rows = [one(data, s, n, t, args, tmp) for s in args.sizes for n, t in runs]
    print(
        f"{args.arch}, global batch {args.batch}, {args.images} training images per measurement, "
        f"-j {args.workers} per process, amp {args.amp}, store {args.store}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPU cores"
    )
    print("| size (px) | processes | threads each | train images/s | train time (s) | wall (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['size']} | {r['procs']} | {r['threads']} | {r['images_per_s']:.1f} | {r['train_time']:.1f} "
            f"| {r['wall']:.0f} |"
        )


if __name__ == "__main__":
    main()
