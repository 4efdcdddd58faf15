"""Atomic checkpoint writes, safe loads (weights_only=True), and finding the latest good one.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one: readers and crashes see either the old complete file or the new complete file.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchcls.errors import UserError

LAST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to `path` atomically: on any failure the previous file is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with weights_only=True; any failure is one clear UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty (0 bytes): it was never completely written")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} was refused: it holds objects other than tensors and plain "
                        f"data, which torchcls never unpickles ({first[:200]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} is unreadable (truncated or corrupt): {first[:200]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path} is not a torchcls/pytorch-classification checkpoint "
                        "(no 'state_dict' key)")
    return ckpt


def clean_state_dict(state: dict) -> dict:
    """Strip the `module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_model_weights(model: nn.Module, state: dict, source: str) -> None:
    """Load weights, with one clear line when the checkpoint is of another network or class count."""
    state = clean_state_dict(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(f"{source} does not fit this model: {len(missing)} missing and {len(unexpected)} "
                        f"unexpected weights (e.g. {(missing or unexpected)[0]!r}); is it another architecture?")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise UserError(f"{source} does not fit this model: {k} has shape {tuple(v.shape)} in the "
                            f"checkpoint but {tuple(own[k].shape)} here (another class count or width?)")
    model.load_state_dict(state)


def find_resume(run_dir: Path) -> Path | None:
    """The latest checkpoint in `run_dir` that loads, for `--resume auto`."""
    cands = [p for p in (run_dir / LAST,) if p.is_file()]
    for p in cands:
        try:
            safe_load(p)
            return p
        except UserError:
            continue
    return None
