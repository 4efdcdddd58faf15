"""`torchcls predict CHECKPOINT INPUT...`: the top-k classes of images, with the checkpoint's own
preprocessing (torchcls/inference.py).

INPUT: image files, folders (searched recursively), glob patterns (`'photos/**/*.jpg'`), or `-`:
paths read from standard input, one a line. A folder whose sub-folders are classes of the
checkpoint (an ImageFolder-style labelled tree, e.g. a data set's val/) also gets its accuracy.
A file that cannot be read is named on one line of standard error and skipped; the exit status is
1 when any was, 0 when all were predicted, 2 for a usage error (no inputs, not a torchcls checkpoint).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from torchcls.data.folder import IMG_EXTENSIONS
from torchcls.engine.setup import resolve_amp, resolve_channels_last, resolve_device
from torchcls.errors import UserError
from torchcls.inference import InferenceInfo, Preprocessing, load_for_inference, predict_logits, preprocess_file
from torchcls.report.progress import Progress

FORMATS = ("text", "csv", "json", "jsonl")
EXT_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MANY_FILES = 1000  # from this many on: progress lines even when stderr is not a terminal, decoding workers


@dataclass
class Item:
    path: str
    label: int | None = None  # the class index when the image sits in a labelled tree


@dataclass
class Outcome:
    records: list[dict] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    labelled: int = 0
    top1_hits: int = 0
    top5_hits: int = 0

    def accuracy(self) -> dict | None:
        """{"count", "top1", "top5"} (percentages) over the labelled images, None when there were none."""
        if not self.labelled:
            return None
        n = self.labelled
        return {"count": n, "top1": 100.0 * self.top1_hits / n, "top5": 100.0 * self.top5_hits / n}


# ----------------------------------------------------------------------------- finding the images


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def _walk_images(root: str) -> list[str]:
    """Image files under `root`, recursively: a folder's own files first, then its sub-folders, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image_name(f)]
    return out


def _own_images(folder: str) -> list[str]:
    return sorted(e.path for e in os.scandir(folder) if e.is_file() and _is_image_name(e.name))


def scan_input_folder(root: str, classes: list[str]) -> tuple[list[Item], str | None]:
    """The images of a folder; labelled when its sub-folders are all classes of the checkpoint.
    Also a note when the sub-folders look like classes (two or more holding images) but are not."""
    subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    index = {c: i for i, c in enumerate(classes)}
    if subdirs and all(d in index for d in subdirs):
        items = [Item(p) for p in _own_images(root)]
        for d in subdirs:
            items += [Item(p, index[d]) for p in _walk_images(os.path.join(root, d))]
        return items, None
    note = None
    if sum(1 for d in subdirs if _own_images(os.path.join(root, d))) >= 2:
        unknown = [d for d in subdirs if d not in index]
        note = (
            f"{root}: its sub-folders look like classes, but {len(unknown)} of {len(subdirs)} are not classes of "
            f"this checkpoint (e.g. {unknown[0]!r}); predicting its images without labels (no accuracy)"
        )
    return [Item(p) for p in _walk_images(root)], note


def collect_inputs(inputs: list[str], classes: list[str], stdin=None) -> tuple[list[Item], list, list[str]]:
    """(images in input order, [(input, reason)] for inputs that name nothing, notes) of the INPUTs:
    files, folders, glob patterns, or "-" (paths from `stdin`, one a line, taken literally)."""
    expanded: list[tuple[str, bool]] = []
    for arg in inputs:
        if arg == "-":
            expanded += [(line.strip(), False) for line in (stdin or sys.stdin) if line.strip()]
        else:
            expanded.append((arg, True))
    items, failures, notes = [], [], []

    def add_folder(folder: str) -> None:
        found, note = scan_input_folder(folder, classes)
        items.extend(found)
        if note:
            notes.append(note)
        if not found:
            notes.append(f"{folder}: no image files ({', '.join(IMG_EXTENSIONS)}) in this folder")

    for arg, may_glob in expanded:
        path = os.path.expanduser(arg)
        if os.path.isdir(path):
            add_folder(path)
        elif os.path.lexists(path):
            items.append(Item(path))
        elif may_glob and any(c in arg for c in "*?["):
            matches = sorted(glob.glob(path, recursive=True))
            for m in matches:
                if os.path.isdir(m):
                    add_folder(m)
                elif _is_image_name(os.path.basename(m)):
                    items.append(Item(m))
            if not matches:
                failures.append((arg, "no file matches this pattern"))
        else:
            failures.append((arg, "no such file or folder"))
    return items, failures, notes


# ----------------------------------------------------------------------------- predicting


class ImageFiles(Dataset):
    """Items (uint8 tensor or None, index, reason it could not be read or None); decoding runs in
    DataLoader workers when there are many files."""

    def __init__(self, paths: list[str], pre: Preprocessing):
        self.paths, self.pre = paths, pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image, reason = preprocess_file(self.paths[i], self.pre)
        return image, i, reason


def _keep_list(batch):
    return batch


def _record(item: Item, row_logits: torch.Tensor, info: InferenceInfo, k: int, logits: bool) -> dict:
    probs = row_logits.softmax(0)
    p, idx = probs.topk(k)
    rec = {"path": item.path}
    if item.label is not None:
        rec["label"] = info.classes[item.label]
    rec["classes"] = [info.classes[i] for i in idx.tolist()]
    rec["probabilities"] = [float(v) for v in p.tolist()]
    if logits:
        rec["logits"] = [float(v) for v in row_logits.tolist()]
    return rec


def predict_items(model, info: InferenceInfo, items: list[Item], *, batch_size: int = 64, workers: int = 0,
                  amp_dtype=None, channels_last: bool = False, tta_flip: bool = False, topk: int = 5,
                  logits: bool = False, on_records: Callable[[list[dict]], None] | None = None,
                  on_failure: Callable[[str, str], None] | None = None, progress=None) -> Outcome:  # fmt: skip
    """Predict `items` in order, `batch_size` at a time: records (path, [label,] classes, probabilities
    [, logits: every class's, in class order]) handed to `on_records` batch by batch, unreadable
    files to `on_failure(path, reason)`, accuracy counted over the labelled items."""
    out = Outcome()
    k, k5 = min(topk, info.num_classes), min(5, info.num_classes)
    files = ImageFiles([it.path for it in items], info.preprocessing)
    loader = DataLoader(files, batch_size=batch_size, num_workers=workers, collate_fn=_keep_list)
    for batch in loader:
        good = [(x, i) for x, i, _ in batch if x is not None]
        for _, i, reason in batch:
            if reason is not None:
                out.failures.append((items[i].path, reason))
                if on_failure is not None:
                    on_failure(items[i].path, reason)
        records = []
        if good:
            x = torch.stack([t for t, _ in good])
            lg = predict_logits(model, x, info, amp_dtype, channels_last, tta_flip)
            for row, (_, i) in zip(lg, good, strict=True):
                records.append(_record(items[i], row, info, k, logits))
                if items[i].label is not None:
                    top = row.topk(k5).indices.tolist()
                    out.labelled += 1
                    out.top1_hits += int(top[0] == items[i].label)
                    out.top5_hits += int(items[i].label in top)
        out.records += records
        if on_records is not None and records:
            on_records(records)
        if progress is not None:
            progress.update(len(batch))
    return out


# ----------------------------------------------------------------------------- writing


class RecordWriter:
    """Writes records as `fmt`: csv and jsonl as they come (nothing is lost if the run stops), json
    (one list) and text (an aligned table) at the end."""

    def __init__(self, stream, fmt: str, k: int, classes: list[str], labelled: bool, logits: bool):
        self.stream, self.fmt, self.k, self.classes = stream, fmt, k, classes
        self.labelled, self.logits, self.kept = labelled, logits, []
        self.csv = None
        if fmt == "csv":
            self.csv = csv.writer(stream, lineterminator="\n")
            head = ["path"] + (["label"] if labelled else [])
            head += [f"{what}_{j}" for j in range(1, k + 1) for what in ("class", "prob")]
            head += [f"logit:{c}" for c in classes] if logits else []
            self.csv.writerow(head)

    def write(self, records: list[dict]) -> None:
        if self.fmt == "jsonl":
            self.stream.writelines(json.dumps(r) + "\n" for r in records)
        elif self.fmt == "csv":
            for r in records:
                row = [r["path"]] + ([r.get("label", "")] if self.labelled else [])
                for c, p in zip(r["classes"], r["probabilities"], strict=True):
                    row += [c, f"{p:.6g}"]
                row += [f"{v:.6g}" for v in r["logits"]] if self.logits else []
                self.csv.writerow(row)
        else:
            self.kept += records
        self.stream.flush()

    def close(self) -> None:
        if self.fmt == "json":
            self.stream.write(json.dumps(self.kept, indent=2) + "\n")
        elif self.fmt == "text":
            self.stream.write(format_table(self.kept, self.k, self.labelled) + "\n")
        self.stream.flush()


def format_table(records: list[dict], k: int, labelled: bool) -> str:
    """One line an image: its path (and true class), then the top-k classes with probabilities."""
    head = ["image"] + (["label"] if labelled else []) + [f"top-{j}" for j in range(1, k + 1)]
    rows = [head]
    for r in records:
        cells = [r["path"]] + ([r.get("label", "")] if labelled else [])
        cells += [f"{c} {100 * p:.1f}%" for c, p in zip(r["classes"], r["probabilities"], strict=True)]
        rows.append(cells + [""] * (len(head) - len(cells)))
    widths = [max(len(row[j]) for row in rows) for j in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])


def format_accuracy(acc: dict) -> str:
    return (
        f"accuracy on {acc['count']} labelled image{'s' if acc['count'] != 1 else ''} (class sub-folders): "
        f"top-1 {acc['top1']:.2f}%  top-5 {acc['top5']:.2f}%"
    )


# ----------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a torchcls checkpoint (checkpoint.pth.tar, model_best.pth.tar)")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, folders (recursive), glob patterns, or - (paths on standard input)")  # fmt: skip
    p.add_argument("-k", "--topk", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="text (an aligned table), csv, json or jsonl (one record per image: path, classes, "
                   "probabilities); default: from -o's extension, else text")  # fmt: skip
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="write there instead of standard output")
    p.add_argument("--logits", action="store_true", help="also write every class's logit (csv, json, jsonl)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("-j", "--workers", type=int, default=None,
                   help="decoding processes (default: none under 1,000 files, else up to 4)")  # fmt: skip
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="override the input size (centre crop) the checkpoint was evaluated at")  # fmt: skip
    p.add_argument("--resize", type=int, default=None, metavar="PX",
                   help="override the shorter side images are resized to before the crop")  # fmt: skip
    p.add_argument("--tta-flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default=None,
                   help="autocast (default: the checkpoint's own --amp, as `torchcls eval`)")  # fmt: skip
    p.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto")


def _output_format(ns: argparse.Namespace) -> str:
    if ns.format:
        return ns.format
    if ns.output:
        return EXT_FORMATS.get(os.path.splitext(ns.output)[1].lower(), "text")
    return "text"


def _say(msg: str) -> None:
    tqdm.write(f"torchcls: predict: {msg}", file=sys.stderr)


def _quiet_broken_pipe(fn, ns: argparse.Namespace) -> int:
    """Run `fn(ns)`; a reader that stops early (`| head`) ends the output quietly, exit status 1
    (what Python's documentation suggests for SIGPIPE)."""
    try:
        return fn(ns)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1


def run(ns: argparse.Namespace) -> int:
    return _quiet_broken_pipe(_run, ns)


def _run(ns: argparse.Namespace) -> int:
    if not ns.inputs:
        raise UserError("predict needs at least one INPUT: image files, folders, glob patterns, or - (paths on stdin)")
    if ns.topk < 1 or ns.batch_size < 1 or (ns.workers is not None and ns.workers < 0):
        raise UserError(f"--topk and --batch-size must be positive and -j >= 0, got {ns.topk}, {ns.batch_size}")
    dev = resolve_device(ns.device)
    cl = resolve_channels_last(ns.channels_last, dev)
    model, info = load_for_inference(ns.checkpoint, dev, cl, size=ns.size, resize=ns.resize)
    amp_dtype = resolve_amp(ns.amp or info.amp, dev)
    items, failures, notes = collect_inputs(ns.inputs, info.classes)
    for note in notes:
        _say(note)
    for path, reason in failures:
        _say(f"skipped {path}: {reason}")
    if not items:
        raise UserError(f"no image files found in {' '.join(ns.inputs)} ({', '.join(IMG_EXTENSIONS)})")
    fmt, n = _output_format(ns), len(items)
    # worker processes take a second or more to start: worth it for many files only
    workers = ns.workers if ns.workers is not None else (0 if n < MANY_FILES else min(4, os.cpu_count() or 1))
    show = (sys.stderr.isatty() and n > ns.batch_size) or n >= MANY_FILES
    progress = Progress(n, "predict", enabled=show)
    labelled = any(it.label is not None for it in items)
    try:
        stream = open(ns.output, "w", newline="", encoding="utf-8") if ns.output else sys.stdout
    except OSError as e:
        raise UserError(f"cannot write -o {ns.output}: {e.strerror}") from None
    try:
        writer = RecordWriter(stream, fmt, min(ns.topk, info.num_classes), info.classes, labelled, ns.logits)
        out = predict_items(model, info, items, batch_size=ns.batch_size, workers=workers, amp_dtype=amp_dtype,
                            channels_last=cl, tta_flip=ns.tta_flip, topk=ns.topk, logits=ns.logits,
                            on_records=writer.write, on_failure=lambda p, r: _say(f"skipped {p}: {r}"),
                            progress=progress)  # fmt: skip
        progress.close()
        writer.close()
        acc = out.accuracy()
        if acc is not None:
            on_stdout = fmt == "text" and stream is sys.stdout
            print(format_accuracy(acc), file=sys.stdout if on_stdout else sys.stderr, flush=True)
    finally:
        if stream is not sys.stdout:
            stream.close()
    failed = len(failures) + len(out.failures)
    if failed:
        _say(f"{failed} of {len(failures) + n} input(s) could not be read (named above)")
    return 1 if failed else 0
