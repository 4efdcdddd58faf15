"""A run's whole state: atomic writes, safe loads (weights_only=True), exact restore (RNG included),
and finding the latest good checkpoint.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed
over the old one: readers and crashes see either the old complete file or the new complete file.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from torchcls.errors import UserError
from torchcls.models.weights import safe_torch_load

LAST = "checkpoint.pth.tar"
BEST = "model_best.pth.tar"


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
                f"{path.name} is unchanged. Free disk space and continue with --resume auto"
            ) from None
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
        raise UserError(
            f"checkpoint {path} is not a PyTorch checkpoint (neither a zip archive nor a pickle); is it the right file?"
        )
    ckpt = safe_torch_load(path, "checkpoint", map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path} is not a torchcls/pytorch-classification checkpoint (no 'state_dict' key)")
    return ckpt


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
        raise UserError(
            f"--resume auto: {e}. Move it away to start a new run in {run_dir}"
            + (f", or pass --resume {best} to continue from the best one" if best.is_file() else "")
        ) from None
    return last


# ----------------------------------------------------------------------------- a run's whole state


def rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]), "python_pos": random.getstate()[2]}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    if "python" in st:
        random.setstate((3, tuple(st["python"]), st.get("python_pos")))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def run_state(run, *, epoch: int, batch: int, acc, best_acc: float, partial: dict | None, aug_gen, meta: dict) -> dict:
    """The checkpoint of `run` (engine/setup.py's Run) at `epoch` (epochs done) and `batch` (batches
    done of the next one, 0 at an epoch's end): weights, optimizer, schedule, scaler, weight average,
    every RNG (the augmentation generator's too, mid-epoch), the epoch's partial sums, and `meta`
    (architecture, classes, mean/std, input size, seed, config: what a checkpoint needs to be used alone)."""
    return {
        "epoch": epoch,
        "batch": batch,
        "state_dict": run.raw_model.state_dict(),
        "acc": acc,
        "best_acc": best_acc,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "rng": rng_state(run.device),
        "aug_rng": aug_gen.get_state() if aug_gen is not None else None,
        "partial": partial,
        "ema": run.ema.state_dict() if run.ema is not None else None,
        **meta,
    }


@dataclass
class Position:
    """Where a run continues: `epoch` epochs done and `batch` batches of the next one (0 at an
    epoch's end), the best accuracy so far, and mid-epoch the interrupted epoch's sums (`partial`)
    and its augmentation generator's state (`aug_rng`)."""

    epoch: int = 0
    batch: int = 0
    best_acc: float = 0.0
    partial: dict | None = None
    aug_rng: Any = None


def restore_run(run, state: dict, steps_per_epoch: int, source: str) -> Position:
    """Put a checkpoint's optimizer, schedule, scaler, weight average and RNG back into `run` (its
    weights were loaded by build_run). Returns the Position the run continues from."""
    epoch = int(state["epoch"])
    if state.get("optimizer"):
        try:
            run.optimizer.load_state_dict(state["optimizer"])
        except ValueError as e:  # e.g. parameter groups changed by --no-wd-norm-bias/--bias-lr-scale
            raise UserError(
                f"{source}: its optimizer state does not fit this run's parameter groups ({e}); "
                "resume with the run's own --no-wd-norm-bias and --bias-lr-scale"
            ) from None
    if state.get("scheduler"):
        run.scheduler.load_state_dict(state["scheduler"])
    else:  # an original pytorch-classification checkpoint: rebuild the schedule position
        run.scheduler.last_epoch = epoch * steps_per_epoch - 1
        run.scheduler.step()
    if state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    if state.get("ema") and run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    if state.get("rng"):
        set_rng_state(state["rng"], run.device)
    return Position(epoch, int(state.get("batch", 0)), float(state.get("best_acc", 0.0)), state.get("partial"),
                    state.get("aug_rng"))  # fmt: skip
