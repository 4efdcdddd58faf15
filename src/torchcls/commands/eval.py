"""`torchcls eval CHECKPOINT`: a checkpoint alone is enough; its model and preprocessing come from
inside it. Device, precision and memory format follow the same rules as `train` (engine/setup.py).

`--folder DIR` evaluates a labelled image folder instead of the data set (DIR/<class>/<images>, the
class folders named as the checkpoint's classes); `--onnx MODEL.onnx` evaluates an exported model in
onnxruntime with the preprocessing its metadata records; `--per-class` adds a per-class table,
confusion.csv and confusion.png."""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from torchcls import inference
from torchcls.data.build import store_max_size
from torchcls.data.datasets import is_folder_dataset, load_dataset
from torchcls.data.folder import FolderLoader, FolderSplit, collate_skipping, scan_folder, scan_split
from torchcls.data.loader import InMemoryLoader
from torchcls.data.store import StoreLoader, existing_store
from torchcls.engine.evaluate import evaluate, tta_logits
from torchcls.engine.setup import amp_name, resolve_amp, resolve_channels_last, resolve_device
from torchcls.engine.step import autocast_ctx, prepare
from torchcls.errors import UserError
from torchcls.inference import load_checkpoint_model
from torchcls.models import input_channels
from torchcls.report.confusion import format_per_class, per_class_rows, plot_confusion, write_confusion_csv

EXPORT_EXTRA = "pip install 'torchcls[export]'"


def split_loader(state: dict, dataset: str, data_dir, split: str, batch_size: int, device: torch.device, limit=0,
                 size=None, resize=None):  # fmt: skip
    """(loader, classes, image size, split name) of a data set's split (its first `limit` images when
    `limit` > 0), preprocessed as in training; for an image folder, `size`/`resize` replace the
    run's --val-size/--val-resize (a test resolution other than the training one, as FixRes)."""
    if not is_folder_dataset(dataset) and (size or resize):
        raise UserError("--val-size and --val-resize apply to image-folder data sets (imagenet) only")
    if is_folder_dataset(dataset):  # an image folder: its val/ (or train/) split
        return _folder_split_loader(state, data_dir, split, batch_size, device, limit, size, resize)
    data = load_dataset(dataset, data_dir, train=(split == "train"))
    if limit:
        data = data.subset(slice(0, limit))
    if state.get("input_size"):  # a model trained on crops is evaluated on the central crop
        data = data.center_crop(int(state["input_size"]))
    loader = InMemoryLoader(data.images.to(device), data.labels.to(device), batch_size, train=False)
    return loader, data.classes, int(data.images.shape[-1]), split


# ----------------------------------------------------------------------------- image files


class ImageFiles(Dataset):
    """(uint8 image or None when unreadable, label, path) of (path, label) samples, an image made by
    `preprocessing` (an inference.Preprocessing: what `torchcls predict` does to a file)."""

    def __init__(self, samples: list[tuple[str, int]], preprocessing):
        self.samples, self.preprocessing = samples, preprocessing

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        return inference.preprocess_file(path, self.preprocessing)[0], label, path


class ImageFileLoader:
    """Batches (uint8 images, labels) of image files on `device`, decoded by `workers` processes;
    unreadable files are left out and listed in `skipped`."""

    def __init__(self, samples, preprocessing, batch_size: int, workers: int, device: torch.device):
        self.device, self.skipped = device, []
        self.loader = DataLoader(ImageFiles(samples, preprocessing), batch_size=batch_size, num_workers=workers,
                                 collate_fn=collate_skipping)  # fmt: skip

    def __iter__(self):
        for x, y, bad in self.loader:
            self.skipped += bad
            if y.numel():
                yield x.to(self.device), y.to(self.device)


def _name_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def scan_labelled_folder(root, classes: list[str], split: str = "test") -> FolderSplit:
    """DIR/<class>/<image files>, labelled with the index of each folder's name among `classes` (exact,
    else ignoring case and punctuation: T-shirt_top for T-shirt/top). A folder may hold some of the
    classes only. An ImageNet-style DIR (train/ and val/) gives its val/ (train/ for split "train")."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"--folder {root} is not a folder; it should hold one sub-folder of images a class")
    subdirs = {e.name for e in os.scandir(root) if e.is_dir()}
    if {"train", "val"} <= subdirs and not {"train", "val"} & set(classes):
        root = root / ("train" if split == "train" else "val")
    found = scan_split(root)
    exact, loose = {c: i for i, c in enumerate(classes)}, {_name_key(c): i for i, c in enumerate(classes)}
    index = {name: exact.get(name, loose.get(_name_key(name))) for name in found.classes}
    unknown = [name for name, i in index.items() if i is None]
    if unknown:
        shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
        raise UserError(
            f"{root}: class folder(s) {', '.join(unknown[:5])} are not classes of the model (its {len(classes)} "
            f"classes: {shown}); name each folder after one of them"
        )
    samples = [(p, index[found.classes[y]]) for p, y in found.samples]
    return FolderSplit(root, list(classes), samples)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_per_class(model: nn.Module, batches, *, mean, std, device, amp_dtype=None, channels_last=False,
                       tta_flip=False, tta_shift=0, tta_below=0.0, channels=3, num_classes: int) -> dict:  # fmt: skip
    """engine.evaluate's figures, computed the same way, and the confusion matrix (rows: true class,
    columns: top-1 prediction) of one process's batches."""
    was_training = model.training
    model.eval()
    loss_sum = top1 = top5 = count = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast_ctx(device, amp_dtype):
            logits = tta_logits(model, prepare(x, mean, std, channels_last, channels), tta_flip, tta_shift, tta_below)
        loss_sum += F.nll_loss(logits.log_softmax(1), y, reduction="sum").item()
        pred = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = pred.eq(y[:, None])
        top1 += hit[:, 0].sum().item()
        top5 += hit.any(1).sum().item()
        count += y.numel()
        confusion.index_put_((y.cpu(), pred[:, 0].cpu()), torch.ones(len(y), dtype=torch.int64), accumulate=True)
    model.train(was_training)
    if count == 0:
        res = {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "count": 0}
    else:
        res = {"loss": loss_sum / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count,
               "count": int(count)}  # fmt: skip
    res["confusion"] = confusion
    return res


def _folder_split_loader(state: dict, data_dir, split: str, batch_size: int, device, limit, size, resize):
    """split_loader for an image folder: from the decoded store the run read (so the figure is the
    run's own, bit for bit) while it is there, up to date and large enough for `resize`; from the
    image files otherwise (the same Resize + CenterCrop, within a level per pixel of the store's)."""
    run_cfg = state.get("config") or {}
    data_dir = data_dir or run_cfg.get("data_dir")
    size = int(size or state.get("input_size") or run_cfg.get("val_size", 224))
    resize = int(resize or (run_cfg.get("val_resize") if size == run_cfg.get("val_size") else 0)
                 or round(size * 256 / 224))  # fmt: skip
    if resize < size:
        raise UserError(f"--val-resize ({resize}) must be at least --val-size ({size})")
    splits = None
    if run_cfg.get("store", "off") != "off":
        keys = {"store_max_size": 0, "val_resize": resize, "train_size": size}
        max_size = store_max_size(SimpleNamespace(**{k: run_cfg.get(k, v) for k, v in keys.items()}))
        splits = existing_store(data_dir, run_cfg["store"], max_size) if resize <= max_size else None
    name = "train" if split == "train" else "val"
    data = splits[name] if splits else (scan_folder(data_dir)[0 if split == "train" else 1])
    if limit:
        data = data.subset(range(min(limit, len(data))))
    common = dict(train=False, size=size, resize=resize, flip=False, seed=0, rank=0, world_size=1, device=device)
    if splits:
        loader = StoreLoader(data, batch_size, **common)
    else:
        loader = FolderLoader(data, batch_size, workers=int(run_cfg.get("workers", 4)), **common)
    loader.source = "store" if splits else "files"
    return loader, data.classes, size, name


def _data(state: dict, name, dataset, data_dir, split, batch_size, dev, limit, folder, workers, preprocessing=None,
          size=None, resize=None):  # fmt: skip
    """(loader, classes, image size, data set label, split label) for `name` (a checkpoint or an
    export). A `folder`'s images get `preprocessing` (default: the checkpoint's, as predict's)."""
    if folder is not None:
        if not state.get("classes"):
            raise UserError(f"{name} does not record its class names, so a folder's classes cannot be matched")
        files = scan_labelled_folder(folder, list(state["classes"]), split)
        samples = files.samples[:limit] if limit else files.samples
        pre = preprocessing or inference.preprocessing_for(state)
        loader = ImageFileLoader(samples, pre, batch_size, workers, dev)
        return loader, files.classes, pre.size, str(files.root), "folder"
    dataset = dataset or state.get("dataset")
    if dataset is None:
        raise UserError(f"{name} does not name its data set; pass --dataset (or --folder DIR)")
    loader, classes, image_size, split = split_loader(state, dataset, data_dir, split, batch_size, dev, limit,
                                                      size, resize)  # fmt: skip
    return loader, classes, image_size, dataset, split


def _measure(name, state, model, loader, classes, image_size, label, *, mean, std, channels, device, amp_dtype,
             channels_last, tta_flip, tta_shift, per_class, tta_below=0.0) -> dict:  # fmt: skip
    """Checks the options against the data, then evaluates (`per_class`: with the confusion matrix)."""
    if not 0 <= tta_shift < image_size:
        raise UserError(
            f"--tta-shift must be in [0, {image_size}) for these {image_size}-pixel images, got {tta_shift}"
        )
    if len(classes) != int(state["num_classes"]):
        raise UserError(f"{name} has {state['num_classes']} classes but {label} has {len(classes)}")
    kw = dict(mean=mean, std=std, device=device, amp_dtype=amp_dtype, channels_last=channels_last,
              tta_flip=tta_flip, tta_shift=tta_shift, tta_below=tta_below, channels=channels)  # fmt: skip
    t0 = time.perf_counter()
    if per_class:
        res = evaluate_per_class(model, loader, num_classes=len(classes), **kw)
        res["per_class"] = per_class_rows(res["confusion"], list(classes))
        res["confusion"] = res["confusion"].tolist()
        res["classes"] = list(classes)
    else:
        res = evaluate(model, loader, **kw)
    res["seconds"] = round(time.perf_counter() - t0, 2)
    if getattr(loader, "skipped", None):
        res["skipped"] = list(loader.skipped)
        if res["count"] == 0:
            raise UserError(f"no image of {label} could be read ({', '.join(loader.skipped[:3])}, ...)")
    return res


def evaluate_checkpoint(path, dataset=None, data_dir=None, batch_size=500, tta_flip=False, device="auto",
                        tta_shift=0, split="test", amp=None, channels_last="auto", limit=0, folder=None,
                        per_class=False, workers=4, val_size=None, val_resize=None, tta_below=0.0) -> dict:  # fmt: skip
    """Top-1/top-5/loss of a checkpoint on a split (or on a labelled image `folder`). `amp` None: the
    precision the run itself evaluated with (its config's --amp, resolved for this machine), so the
    figures match its log. `per_class`: also "per_class" rows and the "confusion" matrix."""
    dev = resolve_device(device)
    cl = resolve_channels_last(channels_last, dev)
    model, state = load_checkpoint_model(path, dev, cl)
    amp_dtype = resolve_amp(amp or (state.get("config") or {}).get("amp", "auto"), dev)
    loader, classes, image_size, dataset, split = _data(state, path, dataset, data_dir, split, batch_size, dev, limit,
                                                        folder, workers, size=val_size, resize=val_resize)  # fmt: skip
    res = _measure(path, state, model, loader, classes, image_size, dataset, mean=state["mean"], std=state["std"],
                   channels=input_channels(model), device=dev, amp_dtype=amp_dtype, channels_last=cl,
                   tta_flip=tta_flip, tta_shift=tta_shift, per_class=per_class, tta_below=tta_below)  # fmt: skip
    res.update({"checkpoint": str(path), "arch": state["arch"], "dataset": dataset, "split": split,
                "epoch": state.get("epoch"), "tta_flip": tta_flip, "tta_shift": tta_shift, "tta_below": tta_below,
                "amp": amp_name(amp_dtype), "image_size": image_size})  # fmt: skip
    if getattr(loader, "source", None):
        res["source"] = loader.source  # an image folder's: its decoded store or its files
    return res


# ----------------------------------------------------------------------------- exported ONNX models


def import_onnxruntime():
    """onnxruntime, or a UserError naming the extra that installs it."""
    try:
        import onnxruntime  # noqa: PLC0415 - optional: the [export] extra
    except ImportError:
        raise UserError(f"running ONNX models needs onnxruntime, from the export extra: {EXPORT_EXTRA}") from None
    return onnxruntime


def graph_input_norm(meta: dict) -> tuple[tuple, tuple, int]:
    """(mean, std, channels) with which `prepare` turns a uint8 batch into an exported graph's float
    input: identity (x / 255, the data's channels) when the graph normalises itself, else the model's
    normalisation and channel count."""
    spec = meta["input"]
    if spec["normalization_in_graph"]:
        c = int(spec["channels"])
        return (0.0,) * c, (1.0,) * c, c
    return tuple(meta["mean"]), tuple(meta["std"]), int(meta["model_channels"])


class OnnxModel(nn.Module):
    """An onnxruntime session as a module taking float input (a uint8-input graph gets x * 255)."""

    def __init__(self, session, meta: dict):
        super().__init__()
        self.session, self.uint8 = session, meta["input"]["dtype"] == "uint8"
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uint8:
            x = x.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        out = self.session.run(None, {self.input_name: x.detach().cpu().contiguous().numpy()})[0]
        return torch.from_numpy(np.asarray(out)).to(x.device)


def open_onnx(path, device: torch.device):
    """(onnxruntime session, torchcls metadata) of an exported ONNX file."""
    ort = import_onnxruntime()
    if not Path(path).is_file():
        raise UserError(f"--onnx {path} does not exist")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), providers=providers)
    except Exception as e:
        raise UserError(f"{path} is not a readable ONNX model: {str(e).splitlines()[0][:200]}") from None
    props = session.get_modelmeta().custom_metadata_map
    if "torchcls" not in props:
        raise UserError(f"{path} has no torchcls metadata; export it with `torchcls export CHECKPOINT --format onnx`")
    return session, json.loads(props["torchcls"])


def state_from_metadata(meta: dict, workers: int = 4) -> dict:
    """The checkpoint fields `split_loader` reads, from an export's metadata (`workers`: decoding
    processes for an image-folder data set)."""
    prep = meta["preprocessing"]
    return {"arch": meta["arch"], "num_classes": meta["num_classes"], "classes": meta["classes"],
            "mean": meta["mean"], "std": meta["std"], "input_size": prep["size"], "dataset": meta["dataset"],
            "epoch": meta.get("epoch"),
            "config": {"data_dir": meta.get("data_dir"), "val_size": prep["size"], "val_resize": prep["resize"],
                       "workers": workers}}  # fmt: skip


def preprocessing_from_metadata(meta: dict):
    """The inference.Preprocessing an export's metadata records."""
    p = meta["preprocessing"]
    return inference.Preprocessing(p["mode"], int(p["resize"]), int(p["crop"]), int(p["pad"]), int(p["size"]),
                                      tuple(p["mean"]), tuple(p["std"]))  # fmt: skip


def evaluate_onnx(path, dataset=None, data_dir=None, batch_size=500, tta_flip=False, device="cpu", tta_shift=0,
                  split="test", limit=0, folder=None, per_class=False, workers=4) -> dict:  # fmt: skip
    """`evaluate_checkpoint` for a model exported to ONNX, run in onnxruntime on the images its
    metadata's preprocessing gives (the data set it names unless `dataset`, or a `folder`)."""
    dev = resolve_device(device)
    session, meta = open_onnx(path, dev)
    state = state_from_metadata(meta, workers)
    cpu = torch.device("cpu")
    pre = preprocessing_from_metadata(meta)
    loader, classes, image_size, dataset, split = _data(state, path, dataset, data_dir, split, batch_size, cpu,
                                                        limit, folder, workers, pre)  # fmt: skip
    mean, std, channels = graph_input_norm(meta)
    res = _measure(path, state, OnnxModel(session, meta), loader, classes, image_size, dataset, mean=mean,
                   std=std, channels=channels, device=cpu, amp_dtype=None, channels_last=False,
                   tta_flip=tta_flip, tta_shift=tta_shift, per_class=per_class)  # fmt: skip
    res.update({"checkpoint": str(path), "format": "onnx", "arch": meta["arch"], "dataset": dataset,
                "split": split, "epoch": meta.get("epoch"), "tta_flip": tta_flip, "tta_shift": tta_shift,
                "amp": "off"})  # fmt: skip
    return res


# ----------------------------------------------------------------------------- the command


def format_result(res: dict) -> str:
    shift = f", shift TTA {res['tta_shift']}px" if res.get("tta_shift") else ""
    if res.get("tta_below"):
        shift += f", extra views only below p {res['tta_below']:g}"
    return (
        f"{res['arch']} on {res['dataset']} {res['split']} ({res['count']} images"
        f"{', flip TTA' if res['tta_flip'] else ''}{shift}): top-1 {res['top1']:.2f}%  top-5 {res['top5']:.2f}%  "
        f"loss {res['loss']:.4f}"
    )


def write_per_class(res: dict, out_dir: Path) -> tuple[Path, Path]:
    """confusion.csv and confusion.png of a per-class result in `out_dir`."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        matrix = torch.tensor(res["confusion"], dtype=torch.int64)
        csv_path = write_confusion_csv(out_dir / "confusion.csv", matrix, res["classes"])
        title = f"{res['arch']} on {res['dataset']} {res['split']}: top-1 {res['top1']:.2f}% ({res['count']} images)"
        png_path = plot_confusion(out_dir / "confusion.png", matrix, res["classes"], title)
    except OSError as e:
        raise UserError(f"cannot write the confusion matrix to {out_dir}: {e.strerror or e}; pass --out-dir") from None
    return csv_path, png_path


def add_arguments(e: argparse.ArgumentParser) -> None:
    e.add_argument("checkpoint", nargs="?", help="a torchcls checkpoint (or an exported .onnx file)")
    e.add_argument("--onnx", default=None, metavar="MODEL.onnx",
                   help="evaluate a model exported by `torchcls export --format onnx` in onnxruntime, with the "
                   "preprocessing its metadata records (its data set unless --dataset or --folder)")  # fmt: skip
    e.add_argument("-d", "--dataset", default=None, help="default: the checkpoint's data set")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--folder", default=None, metavar="DIR",
                   help="evaluate a labelled image folder instead: DIR/<class>/<images>, the folders named as the "
                   "model's classes (case and punctuation aside: T-shirt_top for T-shirt/top; an ImageNet-style "
                   "DIR gives its val/); each image is preprocessed as `torchcls predict` does, as the "
                   "model's validation images were")  # fmt: skip
    e.add_argument("-j", "--workers", type=int, default=4, help="processes decoding --folder images (0: this one)")
    e.add_argument("--split", choices=["test", "train"], default="test")
    e.add_argument("--batch-size", type=int, default=500)
    e.add_argument("--limit", type=int, default=0, metavar="N", help="evaluate the first N images only (0: all)")
    e.add_argument("--tta-flip", action="store_true", help="average with the horizontally flipped image")
    e.add_argument("--tta-shift", type=int, default=0, metavar="PX",
                   help="also average views translated by PX pixels up-left and down-right")  # fmt: skip
    e.add_argument("--tta-below", type=float, default=0.0, metavar="P",
                   help="selective TTA: the extra views only for images whose top class has probability < P "
                   "(default 0: every image)")  # fmt: skip
    e.add_argument("--val-size", type=int, default=None, metavar="PX",
                   help="image folders: evaluate central PXxPX crops (default: the run's --val-size)")  # fmt: skip
    e.add_argument("--val-resize", type=int, default=None, metavar="PX",
                   help="image folders: resize the shorter side to PX before the crop (default: the run's "
                   "--val-resize at its own --val-size, else PX x 256/224)")  # fmt: skip
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default=None,
                   help="autocast (default: the checkpoint's own --amp, as its run evaluated; auto: bf16 where the "
                   "hardware has it natively)")  # fmt: skip
    e.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")
    e.add_argument("--per-class", action="store_true",
                   help="also print each class's accuracy and write confusion.csv (rows: true class, columns: "
                   "predicted) and confusion.png (a heat map) to --out-dir")  # fmt: skip
    e.add_argument("--out-dir", default=None, metavar="DIR",
                   help="where --per-class writes its files (default: the checkpoint's folder; --json prints to "
                   "standard output and writes no file)")  # fmt: skip
    e.add_argument("--json", action="store_true", help="print the result as JSON (with --per-class: its table too)")


def _evaluate_ns(ns: argparse.Namespace) -> dict:
    onnx_path = ns.onnx
    if ns.checkpoint and str(ns.checkpoint).lower().endswith(".onnx"):
        if onnx_path:
            raise UserError("give one model: a checkpoint, or --onnx MODEL.onnx")
        onnx_path = ns.checkpoint
    elif ns.checkpoint and onnx_path:
        raise UserError("give one model: a checkpoint, or --onnx MODEL.onnx")
    if not onnx_path and not ns.checkpoint:
        raise UserError("give a checkpoint to evaluate (or --onnx MODEL.onnx)")
    kw = dict(dataset=ns.dataset, data_dir=ns.data_dir, batch_size=ns.batch_size, tta_flip=ns.tta_flip,
              device=ns.device, tta_shift=ns.tta_shift, split=ns.split, limit=ns.limit, folder=ns.folder,
              per_class=ns.per_class, workers=ns.workers)  # fmt: skip
    if onnx_path:
        if ns.amp not in (None, "off"):
            raise UserError("--amp does not apply to --onnx: onnxruntime runs the exported float32 graph")
        if ns.tta_below:
            raise UserError("--tta-below applies to checkpoints, not to --onnx")
        return evaluate_onnx(onnx_path, **kw)
    if (ns.val_size or ns.val_resize) and ns.folder:
        raise UserError("--val-size/--val-resize change a data set's validation crops; --folder uses predict's")
    return evaluate_checkpoint(ns.checkpoint, amp=ns.amp, channels_last=ns.channels_last, val_size=ns.val_size,
                               val_resize=ns.val_resize, tta_below=ns.tta_below, **kw)  # fmt: skip


def run(ns: argparse.Namespace) -> int:
    if not 0 <= ns.tta_below <= 1:
        raise UserError(f"--tta-below must be a probability in [0, 1], got {ns.tta_below}")
    if ns.batch_size < 1 or ns.limit < 0 or ns.workers < 0:
        raise UserError(
            f"--batch-size must be positive and --limit, --workers >= 0, got {ns.batch_size}, {ns.limit}, {ns.workers}"
        )
    res = _evaluate_ns(ns)
    if ns.per_class:
        csv_path, png_path = write_per_class(res, Path(ns.out_dir or Path(res["checkpoint"]).parent))
        res["confusion_csv"], res["confusion_png"] = str(csv_path), str(png_path)
    if ns.json:
        print(json.dumps({k: v for k, v in res.items() if k != "confusion"}, indent=2))
        return 0
    print(format_result(res))
    if ns.per_class:
        print(format_per_class(res["per_class"]))
        print(f"confusion matrix: {res['confusion_csv']}, heat map: {res['confusion_png']}")
    if res.get("skipped"):
        print(f"skipped {len(res['skipped'])} unreadable file(s): {', '.join(res['skipped'][:3])}")
    return 0
