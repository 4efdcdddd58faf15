"""Weights into models: a safe read of a weights file, prefix clean-up, and a load that names misfits.

The model layer's own tools, for `--pretrained` (models/imagenet/pretrained.py) and for the
engine's checkpoints alike: files are read with torch.load(weights_only=True), so only tensors
and plain data come out and no code in the file runs.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from typing import Any

import torch
import torch.nn as nn

from torchcls.errors import UserError


def unpickler_detail(msg: str) -> str:
    """The reason inside torch's long weights_only message (which also suggests weights_only=False:
    advice torchcls must not pass on), e.g. 'Unsupported global: GLOBAL io.open' or, for a global
    of a blocked module such as os, 'Trying to load unsupported GLOBAL posix.system whose module
    posix is blocked.'."""
    key = "WeightsUnpickler error:"
    if key in msg:
        tail = msg.split(key, 1)[1]
    else:
        blocked = [line.strip() for line in msg.splitlines() if "unsupported global" in line.lower()]
        tail = blocked[0] if blocked else msg
    for line in tail.splitlines():
        line = line.strip()
        if line:
            return line.split(" was not an allowed global")[0][:200]
    return "weights_only unpickler error"


def safe_torch_load(
    path: str | os.PathLike, what: str = "weights file", map_location: str | torch.device = "cpu"
) -> Any:
    """torch.load(path, weights_only=True): only tensors and plain data come out. Any failure is one
    UserError starting with "{what} {path}" (a refused global is named; torch's advice to retry
    with weights_only=False is not passed on)."""
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the outcome says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = unpickler_detail(str(e))
        if "unsupported global" in detail.lower():
            raise UserError(
                f"{what} {path} was refused: it holds objects other than tensors and plain "
                f"data, which torchcls never unpickles ({detail})"
            ) from None
        raise UserError(f"{what} {path} is unreadable (truncated or corrupt): {detail}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{what} {path} is unreadable (truncated or corrupt): {first[:200]}") from None


def clean_state_dict(state: dict) -> dict:
    """Strip the `module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def load_model_weights(model: nn.Module, state: dict, source: str) -> None:
    """Load weights, with one clear line when the checkpoint is of another network or class count."""
    state = clean_state_dict(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise UserError(
            f"{source} does not fit this model: {len(missing)} missing and {len(unexpected)} "
            f"unexpected weights (e.g. {(missing or unexpected)[0]!r}); is it another architecture?"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise UserError(
                f"{source} does not fit this model: {k} has shape {tuple(v.shape)} in the "
                f"checkpoint but {tuple(own[k].shape)} here (another class count or width?)"
            )
    model.load_state_dict(state)
