"""Atomic checkpoint writes, safe loads (weights_only=True), and finding the latest good one.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one: readers and crashes see either the old complete file or the new complete file.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torchcls.errors import UserError

LAST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"
# tests only: seconds to sleep between writing a checkpoint's temporary file and renaming it
SLOW_SAVE_ENV = "TORCHCLS_TEST_SLOW_SAVE"


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, file too large, no permission); the previous one is kept."""


def _write_failure(e: BaseException) -> OSError | None:
    """The OSError behind a failed torch.save: raised directly, or wrapped by PyTorch's zip writer
    in a RuntimeError ('unexpected pos ...') whose context is the OSError."""
    while e is not None:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
    return None


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of `path` left by a process killed mid-write (SIGKILL, power loss)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to `path` atomically: on any failure the previous file is left untouched and no
    temporary file is left behind; a failed write (disk full, ...) is one CheckpointWriteError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get(SLOW_SAVE_ENV):  # tests only: widen the write-to-rename window to kill in it
            time.sleep(float(os.environ[SLOW_SAVE_ENV]))
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        err = _write_failure(e) if isinstance(e, (OSError, RuntimeError)) else None
        if err is not None:
            reason = err.strerror or str(err)
            raise CheckpointWriteError(
                f"could not write checkpoint {path}: {reason} (errno {err.errno}); the previous "
                f"{path.name} is unchanged. Free disk space and continue with --resume auto") from None
        raise
    _remove_stale_temps(path)
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
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PyTorch >= 1.6) or, before that, a pickle (protocol 2: b"\x80\x02")
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise UserError(f"checkpoint {path} is not a PyTorch checkpoint (neither a zip archive nor a pickle); "
                        "is it the right file?")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the outcome says enough
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(str(e))
        if "Unsupported global" in detail:
            raise UserError(f"checkpoint {path} was refused: it holds objects other than tensors and plain "
                            f"data, which torchcls never unpickles ({detail})") from None
        raise UserError(f"checkpoint {path} is unreadable (truncated or corrupt): {detail}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {path} is unreadable (truncated or corrupt): {first[:200]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path} is not a torchcls/pytorch-classification checkpoint "
                        "(no 'state_dict' key)")
    return ckpt


def _unpickler_detail(msg: str) -> str:
    """The reason inside torch's long weights_only message (which also suggests weights_only=False:
    advice torchcls must not pass on), e.g. 'Unsupported global: GLOBAL io.open'."""
    key = "WeightsUnpickler error:"
    tail = msg.split(key, 1)[1] if key in msg else msg
    for line in tail.splitlines():
        line = line.strip()
        if line:
            return line.split(" was not an allowed global")[0][:200]
    return "weights_only unpickler error"


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
    """The checkpoint `--resume auto` continues from: `run_dir`/checkpoint.pth.tar, or None when the
    run folder has none yet (a new run starts). One that exists but does not load is an error, not a
    reason to start over: starting over would overwrite it and lose the run."""
    run_dir = Path(run_dir)
    last = run_dir / LAST
    if not last.is_file():
        return None
    try:
        safe_load(last)
    except UserError as e:
        best = run_dir / BEST
        raise UserError(f"--resume auto: {e}. Move it away to start a new run in {run_dir}"
                        + (f", or pass --resume {best} to continue from the best one" if best.is_file() else "")
                        ) from None
    return last
