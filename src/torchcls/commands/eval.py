"""`torchcls eval CHECKPOINT`: a checkpoint alone is enough; its model and preprocessing come from
inside it. Device, precision and memory format follow the same rules as `train` (engine/setup.py)."""

from __future__ import annotations

import argparse
import json
import time

import torch

from torchcls.data.datasets import is_folder_dataset, load_dataset
from torchcls.data.folder import FolderLoader, scan_folder
from torchcls.data.loader import InMemoryLoader
from torchcls.engine import checkpoint as ckpt_io
from torchcls.engine.evaluate import evaluate
from torchcls.engine.setup import amp_name, resolve_amp, resolve_channels_last, resolve_device
from torchcls.errors import UserError
from torchcls.models import create_model
from torchcls.models.weights import load_model_weights


def load_checkpoint_model(path, device: torch.device, channels_last: bool) -> tuple[torch.nn.Module, dict]:
    """The model a torchcls checkpoint holds, on `device`, and the checkpoint. A run with
    --ema-decay evaluated (and chose its best model by) the weights' moving average: that one."""
    state = ckpt_io.safe_load(path)
    missing = [k for k in ("arch", "num_classes", "mean", "std") if k not in state]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}: it is not a torchcls checkpoint, so its model "
            "and preprocessing are unknown"
        )
    try:
        model = create_model(state["arch"], num_classes=int(state["num_classes"]), **state.get("model_kwargs", {}))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    ema = state.get("ema")
    weights = ema["state_dict"] if ema and ema.get("updates") else state["state_dict"]
    load_model_weights(model, weights, str(path))
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, state


def split_loader(state: dict, dataset: str, data_dir, split: str, batch_size: int, device: torch.device, limit=0):
    """(loader, classes, image size, split name) of a data set's split (its first `limit` images when
    `limit` > 0), preprocessed as in training."""
    if is_folder_dataset(dataset):  # an image folder: its val/ (or train/) split
        run_cfg = state.get("config") or {}
        train_split, val_split = scan_folder(data_dir or run_cfg.get("data_dir"))
        data = train_split if split == "train" else val_split
        if limit:
            data = data.subset(range(min(limit, len(data))))
        size = int(state.get("input_size") or run_cfg.get("val_size", 224))
        loader = FolderLoader(data, batch_size, train=False, size=size,
                              resize=int(run_cfg.get("val_resize", round(size * 256 / 224))), flip=False, seed=0,
                              rank=0, world_size=1, workers=int(run_cfg.get("workers", 4)), device=device)  # fmt: skip
        return loader, data.classes, size, "train" if split == "train" else "val"
    data = load_dataset(dataset, data_dir, train=(split == "train"))
    if limit:
        data = data.subset(slice(0, limit))
    if state.get("input_size"):  # a model trained on crops is evaluated on the central crop
        data = data.center_crop(int(state["input_size"]))
    loader = InMemoryLoader(data.images.to(device), data.labels.to(device), batch_size, train=False)
    return loader, data.classes, int(data.images.shape[-1]), split


def evaluate_checkpoint(path, dataset=None, data_dir=None, batch_size=500, tta_flip=False, device="auto",
                        tta_shift=0, split="test", amp=None, channels_last="auto", limit=0) -> dict:  # fmt: skip
    """Top-1/top-5/loss of a checkpoint on a split. `amp` None: the precision the run itself
    evaluated with (its config's --amp, resolved for this machine), so the figures match its log."""
    dev = resolve_device(device)
    cl = resolve_channels_last(channels_last, dev)
    model, state = load_checkpoint_model(path, dev, cl)
    amp_dtype = resolve_amp(amp or (state.get("config") or {}).get("amp", "auto"), dev)
    dataset = dataset or state.get("dataset")
    if dataset is None:
        raise UserError(f"{path} does not name its data set; pass --dataset")
    loader, classes, image_size, split = split_loader(state, dataset, data_dir, split, batch_size, dev, limit)
    if not 0 <= tta_shift < image_size:
        raise UserError(
            f"--tta-shift must be in [0, {image_size}) for these {image_size}-pixel images, got {tta_shift}"
        )
    if len(classes) != int(state["num_classes"]):
        raise UserError(f"{path} has {state['num_classes']} classes but {dataset} has {len(classes)}")
    t0 = time.perf_counter()
    res = evaluate(model, loader, mean=state["mean"], std=state["std"], device=dev, amp_dtype=amp_dtype,
                   channels_last=cl, tta_flip=tta_flip, tta_shift=tta_shift)  # fmt: skip
    res.update({"checkpoint": str(path), "arch": state["arch"], "dataset": dataset, "split": split,
                "epoch": state.get("epoch"), "tta_flip": tta_flip, "tta_shift": tta_shift,
                "amp": amp_name(amp_dtype),
                "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
    return res


def format_result(res: dict) -> str:
    shift = f", shift TTA {res['tta_shift']}px" if res.get("tta_shift") else ""
    return (
        f"{res['arch']} on {res['dataset']} {res['split']} ({res['count']} images"
        f"{', flip TTA' if res['tta_flip'] else ''}{shift}): top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  "
        f"loss {res['loss']:.4f}"
    )


def add_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("checkpoint")
    e.add_argument("-d", "--dataset", default=None, help="default: the checkpoint's data set")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--split", choices=["test", "train"], default="test")
    e.add_argument("--batch-size", type=int, default=500)
    e.add_argument("--limit", type=int, default=0, metavar="N", help="evaluate the first N images only (0: all)")
    e.add_argument("--tta-flip", action="store_true", help="average with the horizontally flipped image")
    e.add_argument("--tta-shift", type=int, default=0, metavar="PX",
                   help="also average views translated by PX pixels up-left and down-right")  # fmt: skip
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default=None,
                   help="autocast (default: the checkpoint's own --amp, as its run evaluated; auto: bf16 where the "
                   "hardware has it natively)")  # fmt: skip
    e.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")
    e.add_argument("--json", action="store_true", help="print the result as JSON")


def run(ns: argparse.Namespace) -> int:
    if ns.batch_size < 1 or ns.limit < 0:
        raise UserError(f"--batch-size must be positive and --limit >= 0, got {ns.batch_size} and {ns.limit}")
    res = evaluate_checkpoint(ns.checkpoint, dataset=ns.dataset, data_dir=ns.data_dir, batch_size=ns.batch_size,
                              tta_flip=ns.tta_flip, device=ns.device, tta_shift=ns.tta_shift, split=ns.split,
                              amp=ns.amp, channels_last=ns.channels_last, limit=ns.limit)  # fmt: skip
    print(json.dumps(res, indent=2) if ns.json else format_result(res))
    return 0
