"""`torchcls prepare`: decode an ImageNet-style folder once into the image store training reads.

    torchcls prepare --data-dir DIR [--max-size PX] [-o STORE] [-j N] [--force]

Without -o the store goes where `torchcls train --store auto` looks for it (the cache folder,
one store per folder and size), so a later run with the same --data-dir and size reuses it. An
up-to-date store is left as it is unless --force.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torchcls.data.datasets import canonical_name, is_folder_dataset
from torchcls.data.store import default_store_path, ensure_store
from torchcls.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--dataset", default="imagenet", help="an ImageNet-style folder data set (default imagenet)")
    p.add_argument("--data-dir", "--data", dest="data_dir", required=True, help="the folder holding train/ and val/")
    p.add_argument(
        "--max-size", dest="max_size", type=int, default=256, metavar="PX",
        help="shorter side of the stored images, at most (never enlarged; default 256; a run's own default "
        "is the larger of its --val-resize and --train-size)",
    )  # fmt: skip
    p.add_argument("-o", "--out", default=None, help="the store's folder (default: where --store auto finds it)")
    p.add_argument("-j", "--workers", type=int, default=0, help="decoding processes (default: the CPU count, <= 8)")
    p.add_argument("--force", action="store_true", help="rebuild even when the store is up to date")


def run(ns: argparse.Namespace) -> int:
    if not is_folder_dataset(canonical_name(ns.dataset)):
        raise UserError(f"--dataset {ns.dataset} is held in memory already; prepare is for image folders (imagenet)")
    if ns.max_size < 1:
        raise UserError(f"--max-size must be positive, got {ns.max_size}")
    out = Path(ns.out).expanduser() if ns.out else default_store_path(ns.data_dir, ns.max_size)
    if not ensure_store(ns.data_dir, out, ns.max_size, ns.workers, force=ns.force):
        print(f"torchcls: the store {out}/ is up to date ({ns.max_size} px); --force rebuilds it")
        return 0
    print(f"{out}")
    return 0
