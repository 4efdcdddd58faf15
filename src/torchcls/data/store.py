"""The decoded image store: an ImageNet-style folder decoded once, read as uint8 from a memory map.

Why: decoding every JPEG again every epoch, in worker processes that compete with the training
threads for the same few cores, made ResNet-18 train at 4-45 images/s on a 2-core CPU. The store
decodes each image once (`torchcls prepare`, or automatically on a run's first use), resizes it so
its shorter side is at most `max_size` (never enlarging), and keeps the pixels as plain uint8.

Format (a folder, STORE_VERSION 1):

    meta.json    magic, version, max_size, classes, per split: image count, data bytes, the
                 fingerprint of the source files (relative path, size, mtime of every file) and the
                 sha256 of its index, the files left out as unreadable, the build's date and version
    train.u8     the training images, HWC uint8 RGB, one after another
    train.npz    offsets (int64), heights, widths (int32) and labels (int64) of train.u8's images
    val.u8, val.npz

Opening checks the magic, the version, each index's sha256 and each data file's exact size (a
truncated or damaged store is refused with one line, never trusted) and, given the source folder,
its fingerprint (a changed folder is noticed: `resolve_store` rebuilds). A build writes into a
temporary folder next to the store and renames it into place, so an interrupted build leaves no
half store behind.

Why plain memory-mapped numpy files rather than a library: FFCV has the same idea (raw or JPEG
pixels in one file, read through a memory map) but ships compiled extensions pinned to old
torch/numpy releases and its own loader that would replace torchcls's per-sample (seed, epoch,
index) crops; webdataset and litdata store encoded files in tar/chunk shards for streaming from
object storage, so every epoch would decode again, which is the cost to remove. Raw uint8 costs
disk (Imagewoof at 160 px: 1.3 GB; ImageNet at 160 px: about 130 GB) and in exchange needs no
decoder at all when training, and is read by numpy alone.

Reading: `StoreLoader` draws each sample's RandomResizedCrop box and flip from the generator of
(seed, epoch, index) exactly as the JPEG path does (data/folder.py), crops the stored pixels and
resizes the crops with torch's antialiased bilinear interpolation (equal to PIL's crop-then-resize,
torchvision's RandomResizedCrop on PIL images, within 1 level), on the run's device. A background
thread prepares the next batches while the model trains.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from torchcls import __version__
from torchcls.data.folder import (
    FolderSplit,
    ShardedSampler,
    eval_size,
    random_resized_crop_box,
    sample_generator,
    scan_folder,
)
from torchcls.errors import UserError
from torchcls.hashing import sha256_file
from torchcls.report.progress import Progress

MAGIC = "torchcls-image-store"
STORE_VERSION = 1
SPLITS = ("train", "val")


# ----------------------------------------------------------------------------- locating


def cache_root() -> Path:
    """$TORCHCLS_CACHE, else $XDG_CACHE_HOME/torchcls, else ~/.cache/torchcls."""
    if os.environ.get("TORCHCLS_CACHE"):
        return Path(os.environ["TORCHCLS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "torchcls"


def default_store_path(data_dir, max_size: int) -> Path:
    """Where `--store auto` keeps the store of `data_dir` at `max_size`: one per folder and size."""
    root = Path(data_dir).expanduser().resolve()
    tag = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return cache_root() / "stores" / f"{root.name or 'data'}-{tag}-{max_size}px"


def fingerprint(split: FolderSplit) -> str:
    """sha256 of (relative path, size, mtime) of every file of a split, in scan order, with labels."""
    h = hashlib.sha256()
    for path, label in split.samples:
        st = os.stat(path)
        h.update(f"{os.path.relpath(path, split.root)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- building


def stored_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """(width, height) with the shorter side at most max_size, the aspect ratio kept."""
    short = min(width, height)
    if short <= max_size:
        return width, height
    s = max_size / short
    if width <= height:
        return max_size, max(1, int(round(height * s)))
    return max(1, int(round(width * s))), max_size


def decode_for_store(path: str, max_size: int) -> np.ndarray | None:
    """An image file as HWC uint8 RGB with its shorter side at most max_size; None if unreadable."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            w, h = stored_size(img.width, img.height, max_size)
            if (w, h) != img.size and img.format == "JPEG":
                img.draft("RGB", (w, h))  # decode at a reduced DCT scale, still at least (w, h)
            img.load()
        img = img.convert("RGB") if img.mode != "RGB" else img
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)
    except Exception:
        return None


def _decode_job(args):
    return decode_for_store(*args)


def _write_split(split: FolderSplit, folder: Path, name: str, max_size: int, workers: int, progress) -> dict:
    n = len(split)
    offsets = np.zeros(n, np.int64)
    heights = np.zeros(n, np.int32)
    widths = np.zeros(n, np.int32)
    labels = np.zeros(n, np.int64)
    bad, pos, k = [], 0, 0
    jobs = ((path, max_size) for path, _ in split.samples)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(_decode_job, jobs, chunksize=32) if pool else map(_decode_job, jobs)
        with open(folder / f"{name}.u8", "wb") as f:
            for (path, label), arr in zip(split.samples, results, strict=True):
                progress()
                if arr is None:
                    bad.append(os.path.relpath(path, split.root))
                    continue
                f.write(arr.tobytes())
                offsets[k], heights[k], widths[k], labels[k] = pos, arr.shape[0], arr.shape[1], label
                pos += arr.nbytes
                k += 1
    finally:
        if pool:
            pool.shutdown()
    index = folder / f"{name}.npz"
    np.savez(index, offsets=offsets[:k], heights=heights[:k], widths=widths[:k], labels=labels[:k])
    return {
        "images": k,
        "bytes": pos,
        "index_sha256": sha256_file(index),
        "fingerprint": fingerprint(split),
        "source": str(split.root),
        "unreadable": bad,
    }


def _replaceable(path: Path) -> bool:
    """A folder a build may replace: an empty one, or one holding a store (even a damaged one)."""
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    if not names:
        return True
    store_files = {"meta.json"} | {f"{s}{ext}" for s in SPLITS for ext in (".u8", ".npz")}
    return names <= store_files and bool(names & store_files)


def build_store(data_dir, out: Path, max_size: int, workers: int = 0, log=print) -> Path:
    """Decode train/ and val/ of an ImageNet-style folder into a store at `out` (replacing one there)."""
    if max_size < 1:
        raise UserError(f"--max-size must be positive, got {max_size}")
    train, val = scan_folder(data_dir)
    out = Path(out).expanduser()
    if out.exists() and not _replaceable(out):
        raise UserError(f"{out} exists and is not a torchcls image store; give the store another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    workers = workers or min(8, os.cpu_count() or 1)
    log(f"torchcls: decoding {len(train) + len(val)} images of {data_dir} once into the store {out}/ "
        f"(shorter side at most {max_size} px, {workers} processes)")  # fmt: skip
    bar = Progress(len(train) + len(val), "store", interval=10.0)
    t0 = time.perf_counter()
    try:
        meta = {
            "magic": MAGIC,
            "version": STORE_VERSION,
            "max_size": max_size,
            "classes": train.classes,
            "splits": {
                name: _write_split(split, tmp, name, max_size, workers, lambda: bar.update(1))
                for name, split in zip(SPLITS, (train, val), strict=True)
            },
            "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "torchcls": __version__,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    bad = [f"{name}/{p}" for name in SPLITS for p in meta["splits"][name]["unreadable"]]
    if bad:
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        log(f"torchcls: {len(bad)} unreadable file(s) left out of the store: {', '.join(bad[:20])}{more}")
    size = sum(meta["splits"][s]["bytes"] for s in SPLITS)
    log(f"torchcls: store ready in {time.perf_counter() - t0:.0f}s: {meta['splits']['train']['images']} train + "
        f"{meta['splits']['val']['images']} val images, {size / 2**20:.0f} MiB")  # fmt: skip
    return out


# ----------------------------------------------------------------------------- opening


class StaleStore(Exception):
    """The source folder changed since the store was built."""


@dataclass
class StoreSplit:
    """One split of a store: `image(i)` is a read-only HWC uint8 view into the memory map."""

    root: Path
    classes: list[str]
    data: np.ndarray
    offsets: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        h, w, o = int(self.heights[i]), int(self.widths[i]), int(self.offsets[i])
        return self.data[o : o + h * w * 3].reshape(h, w, 3)

    def subset(self, indices) -> StoreSplit:
        idx = np.asarray(list(indices), dtype=np.int64)
        return StoreSplit(self.root, self.classes, self.data, self.offsets[idx], self.heights[idx], self.widths[idx],
                          self.labels[idx])  # fmt: skip


def _damaged(path: Path, why: str) -> UserError:
    return UserError(
        f"the image store {path} is damaged ({why}); delete it (rm -r {path}) or rebuild it with "
        f"torchcls prepare --force, and it will be built again"
    )


def open_store(path: Path, data_dir=None) -> tuple[dict, dict[str, StoreSplit]]:
    """meta.json and the memory-mapped splits of the store at `path`, every part checked.

    Raises UserError for a damaged store, StaleStore when `data_dir` is given and its files
    differ from those the store was built from."""
    path = Path(path).expanduser()
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise _damaged(path, "no meta.json") from None
    except (OSError, ValueError) as e:
        raise _damaged(path, f"meta.json unreadable: {e}") from None
    if not isinstance(meta, dict) or meta.get("magic") != MAGIC:
        raise _damaged(path, "meta.json is not a torchcls store's")
    if meta.get("version") != STORE_VERSION:
        raise UserError(
            f"the image store {path} has format version {meta.get('version')}, this torchcls reads "
            f"{STORE_VERSION}; rebuild it with torchcls prepare --force"
        )
    try:
        classes = list(meta["classes"])
        info = {name: meta["splits"][name] for name in SPLITS}
    except (KeyError, TypeError):
        raise _damaged(path, "meta.json lacks its classes or splits") from None
    if data_dir is not None:
        train, val = scan_folder(data_dir)
        for name, split in zip(SPLITS, (train, val), strict=True):
            if fingerprint(split) != info[name]["fingerprint"]:
                raise StaleStore(f"the files of {split.root} changed since the store {path} was built")
    splits = {}
    for name in SPLITS:
        index, data = path / f"{name}.npz", path / f"{name}.u8"
        if not index.is_file() or sha256_file(index) != info[name]["index_sha256"]:
            raise _damaged(path, f"{index.name} missing or not the one it was built with")
        size = data.stat().st_size if data.is_file() else -1
        if size != info[name]["bytes"]:
            raise _damaged(path, f"{data.name} holds {max(size, 0)} bytes, its index needs {info[name]['bytes']}")
        with np.load(index) as z:
            arrays = {k: z[k] for k in ("offsets", "heights", "widths", "labels")}
        ends = arrays["offsets"] + arrays["heights"].astype(np.int64) * arrays["widths"] * 3
        if len(ends) and (ends.max() > size or arrays["labels"].min() < 0 or arrays["labels"].max() >= len(classes)):
            raise _damaged(path, f"{index.name} points outside {data.name} or to unknown classes")
        mm = np.memmap(data, dtype=np.uint8, mode="c") if size > 0 else np.zeros(0, np.uint8)
        splits[name] = StoreSplit(path, classes, mm, **arrays)
    return meta, splits


def ensure_store(data_dir, path: Path, max_size: int, workers: int = 0, log=print, force: bool = False) -> bool:
    """Build the store at `path` when it is missing or empty, holds another size, was built from
    other files than `data_dir` holds now, or `force`; refuse it (UserError) when damaged.
    Returns True when it was built, False when the one there is up to date."""
    if not force and path.exists() and not (path.is_dir() and not any(path.iterdir())):
        try:
            meta, _ = open_store(path, data_dir)
            if meta["max_size"] == max_size:
                return False
            log(f"torchcls: the store {path} holds images at {meta['max_size']} px, not {max_size}; rebuilding")
        except StaleStore as e:
            log(f"torchcls: {e}; rebuilding it")
    build_store(data_dir, path, max_size, workers, log)
    return True


def store_path(data_dir, store: str, max_size: int) -> Path:
    """Where the store of `--store` ("auto": the cache folder's store of this folder and size, else
    a path) lies."""
    return default_store_path(data_dir, max_size) if store == "auto" else Path(store).expanduser()


def existing_store(data_dir, store: str, max_size: int) -> dict[str, StoreSplit] | None:
    """The splits of the store a run with these settings read (`store` "auto" or a path), when it
    is still there, holds `max_size` and matches the folder's files now; None when there is none
    or it is out of date (nothing is built). A damaged store is refused (UserError)."""
    if store == "off" or data_dir is None:
        return None
    path = store_path(data_dir, store, max_size)
    if not (path / "meta.json").is_file():
        return None
    try:
        meta, splits = open_store(path, data_dir)
    except StaleStore:
        return None
    return splits if meta.get("max_size") == max_size else None


def resolve_store(data_dir, store: str, max_size: int, workers: int = 0, log=print, is_main: bool = True,
                  wait=lambda: None) -> tuple[Path, dict, dict[str, StoreSplit]]:  # fmt: skip
    """The store a run reads: `store` is "auto" (the cache folder's store of this folder and size)
    or a path. Built when missing, rebuilt when the folder changed, refused when damaged.
    With several processes only the main one builds and checks the folder against the store;
    `wait` is the barrier the others wait at before opening what it left."""
    if data_dir is None:
        raise UserError("--dataset imagenet needs --data-dir DIR (or --data DIR) holding train/ and val/")
    path = store_path(data_dir, store, max_size)
    if is_main:
        ensure_store(data_dir, path, max_size, workers, log)
    wait()
    meta, splits = open_store(path)  # the folder was checked (or the store built from it) just above
    if is_main:
        n = {s: meta["splits"][s]["images"] for s in SPLITS}
        log(f"torchcls: reading images from the store {path}/ ({n['train']} train + {n['val']} val, "
            f"shorter side <= {meta['max_size']} px)")  # fmt: skip
    return path, meta, splits


# ----------------------------------------------------------------------------- reading


def resize_crop(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, 3, h, w) uint8 -> (1, 3, H, W) uint8, antialiased bilinear (uint8 kernels on the CPU,
    float elsewhere)."""
    if img.device.type == "cpu":
        return F.interpolate(img, size=size, mode="bilinear", antialias=True, align_corners=False)
    out = F.interpolate(img.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def train_view(arr: np.ndarray, size: int, g: torch.Generator, flip: bool, scale, device) -> torch.Tensor:
    """RandomResizedCrop(size, scale) + random horizontal flip of one stored image, as data/folder.py
    draws them: the box, then the flip, from `g`."""
    h, w = arr.shape[:2]
    left, top, cw, ch = random_resized_crop_box(w, h, g, scale)
    flipped = flip and float(torch.rand(1, generator=g)) < 0.5
    crop = torch.from_numpy(np.ascontiguousarray(arr[top : top + ch, left : left + cw]))
    out = resize_crop(crop.to(device).permute(2, 0, 1).unsqueeze(0), (size, size))
    return out.flip(-1) if flipped else out


def eval_view(arr: np.ndarray, resize: int, size: int, device) -> torch.Tensor:
    """Resize(resize) + CenterCrop(size) of one stored image (data/folder.py's eval_transform)."""
    h, w = arr.shape[:2]
    nw, nh = eval_size(w, h, resize)
    img = torch.from_numpy(np.ascontiguousarray(arr)).to(device).permute(2, 0, 1).unsqueeze(0)
    img = resize_crop(img, (nh, nw)) if (nw, nh) != (w, h) else img
    if nw < size or nh < size:  # CenterCrop pads a too-small image with zeros
        pw, ph = max(nw, size), max(nh, size)
        px, py = (pw - nw) // 2, (ph - nh) // 2
        img = F.pad(img, (px, pw - nw - px, py, ph - nh - py))
        nw, nh = pw, ph
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return img[..., top : top + size, left : left + size]


class StoreLoader:
    """The loop's interface (`set_epoch`, `len`, `iterate(start_batch)`) over a store split: the
    order of data/loader.py's shard_indices, each sample's crop from (seed, epoch, index), batches of
    uint8 (B, 3, S, S) built on `device` by a background thread (`prefetch` batches ahead)."""

    def __init__(self, split: StoreSplit, batch_size: int, *, train: bool, size: int, resize: int, flip: bool,
                 seed: int, rank: int, world_size: int, device: torch.device, scale=(0.08, 1.0),
                 prefetch: int = 2):  # fmt: skip
        self.split, self.batch_size, self.train, self.size, self.resize = split, batch_size, train, size, resize
        self.flip, self.seed = flip, seed
        self.device, self.scale, self.prefetch = device, tuple(scale), prefetch
        self.sampler = ShardedSampler(len(split), batch_size, train, seed, rank, world_size)  # the JPEG path's order

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def set_size(self, size: int) -> None:
        """Crop at `size` from now on (progressive resizing: the crop boxes stay those of (seed, epoch, index))."""
        self.size = size

    def indices(self) -> torch.Tensor:
        return self.sampler.indices()

    def __len__(self) -> int:
        return self.sampler.num_batches()

    def __iter__(self):
        return self.iterate()

    def take_skipped(self) -> list[str]:
        return []  # unreadable files were named once, when the store was built

    def batch(self, idx: list[int], epoch: int, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s, size = self.split, size or self.size
        if self.train:
            views = [train_view(s.image(i), size, sample_generator(self.seed, epoch, i), self.flip, self.scale,
                                self.device) for i in idx]  # fmt: skip
        else:
            views = [eval_view(s.image(i), self.resize, self.size, self.device) for i in idx]
        labels = torch.from_numpy(s.labels[np.asarray(idx, dtype=np.int64)]).to(self.device)
        return torch.cat(views), labels

    def iterate(self, start_batch: int = 0):
        idx = self.indices().tolist()
        starts = range(start_batch * self.batch_size, len(idx), self.batch_size)
        if self.train:
            starts = [b for b in starts if b + self.batch_size <= len(idx)]
        chunks = [idx[b : b + self.batch_size] for b in starts]
        if self.prefetch <= 0:
            for c in chunks:
                yield self.batch(c, self.sampler.epoch)
            return
        yield from _prefetched(lambda c, e=self.sampler.epoch, z=self.size: self.batch(c, e, z), chunks, self.prefetch)


def _prefetched(make, items, depth: int):
    """make(item) for every item, computed by one background thread up to `depth` ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work():
        try:
            for it in items:
                if stop.is_set():
                    return
                q.put((True, make(it)))
            q.put((True, None))
        except BaseException as e:  # handed to the consumer, raised there
            q.put((False, e))

    t = threading.Thread(target=work, daemon=True, name="torchcls-store")
    t.start()
    try:
        while True:
            ok, value = q.get()
            if not ok:
                raise value
            if value is None:
                return
            yield value
    finally:
        stop.set()
        while t.is_alive():  # let the worker finish the batch it is on
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
