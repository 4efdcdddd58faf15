"""`torchcls eval`: a checkpoint alone is enough; its model and preprocessing come from inside it."""
from __future__ import annotations

import time

import torch

from torchcls.data.loader import InMemoryLoader
from torchcls.engine import checkpoint as ckpt_io
from torchcls.engine.evaluate import evaluate
from torchcls.errors import UserError
from torchcls.models import create_model


def evaluate_checkpoint(path, dataset=None, data_dir=None, batch_size=500, tta_flip=False, device="auto", tta_shift=0,
                        split="test") -> dict:
    from torchcls.data.datasets import is_folder_dataset, load_dataset

    state = ckpt_io.safe_load(path)
    missing = [k for k in ("arch", "num_classes", "mean", "std") if k not in state]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}: it is not a torchcls checkpoint, so its model "
                        "and preprocessing are unknown")
    dataset = dataset or state.get("dataset")
    if dataset is None:
        raise UserError(f"{path} does not name its data set; pass --dataset")
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    try:
        model = create_model(state["arch"], num_classes=int(state["num_classes"]), **state.get("model_kwargs", {}))
    except ValueError as e:
        raise UserError(f"{path}: {e}") from None
    # a run with --ema-decay evaluated (and chose its best model by) the weights' moving average
    ema = state.get("ema")
    weights = ema["state_dict"] if ema and ema.get("updates") else state["state_dict"]
    ckpt_io.load_model_weights(model, weights, str(path))
    model = model.to(dev).to(memory_format=torch.channels_last)
    if is_folder_dataset(dataset):  # an image folder: its val/ (or train/) split, preprocessed as in training
        from torchcls.data.folder import FolderLoader, scan_folder

        run_cfg = state.get("config") or {}
        train_split, val_split = scan_folder(data_dir or run_cfg.get("data_dir"))
        data = train_split if split == "train" else val_split
        split = "train" if split == "train" else "val"
        size = int(state.get("input_size") or run_cfg.get("val_size", 224))
        image_size = size
        loader = FolderLoader(data, batch_size, train=False, size=size,
                              resize=int(run_cfg.get("val_resize", round(size * 256 / 224))), flip=False, seed=0,
                              rank=0, world_size=1, workers=int(run_cfg.get("workers", 4)), device=dev)
    else:
        data = load_dataset(dataset, data_dir, train=(split == "train"))
        if state.get("input_size"):  # a model trained on crops is evaluated on the central crop
            data = data.center_crop(int(state["input_size"]))
        image_size = int(data.images.shape[-1])
        loader = InMemoryLoader(data.images.to(dev), data.labels.to(dev), batch_size, train=False)
    if not 0 <= tta_shift < image_size:
        raise UserError(f"--tta-shift must be in [0, {image_size}) for these {image_size}-pixel images, got {tta_shift}")
    if len(data.classes) != int(state["num_classes"]):
        raise UserError(f"{path} has {state['num_classes']} classes but {dataset} has {len(data.classes)}")
    t0 = time.perf_counter()
    res = evaluate(model, loader, mean=state["mean"], std=state["std"], device=dev, channels_last=True,
                   tta_flip=tta_flip, tta_shift=tta_shift)
    res.update({"checkpoint": str(path), "arch": state["arch"], "dataset": dataset, "split": split,
                "epoch": state.get("epoch"), "tta_flip": tta_flip, "tta_shift": tta_shift,
                "seconds": round(time.perf_counter() - t0, 2)})
    return res


def format_result(res: dict) -> str:
    shift = f", shift TTA {res['tta_shift']}px" if res.get("tta_shift") else ""
    return (f"{res['arch']} on {res['dataset']} {res['split']} ({res['count']} images"
            f"{', flip TTA' if res['tta_flip'] else ''}{shift}): top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  "
            f"loss {res['loss']:.4f}")
