"""Runtime settings of a CPU run: the C allocator (process-wide) and torch.compile's settings (per model).

glibc's malloc serves requests above a dynamic threshold (128 KiB at first) with fresh mmap()s and
gives the top of the heap back to the kernel when more than 128 KiB is free there. A training step
allocates and frees the same activation and gradient buffers (megabytes each) every step, so with
the defaults many of them come back as new pages that the kernel must fault in and zero, step after
step. `tune_malloc` keeps them in the heap instead: requests up to 32 MiB come from the heap
(M_MMAP_THRESHOLD) and up to 1 GiB of free heap top is kept (M_TRIM_THRESHOLD). The price is that
freed memory stays with the process (its peak, not its working set, is what it holds). Measured in
docs/RESULTS.md ("What each speed setting gives"): it matters most for torch.compile'd steps.

`compile_model` is torch.compile with one documented inductor option, passed for that model only
(`torch.compile(options=...)`, so other compilations in the process are unaffected): variances
(BatchNorm's in a CIFAR network) over up to 131,072 elements, a batch of 128 at 32x32, are
computed as a mean and then a sum of squared deviations (two passes over the activations)
instead of inductor's Welford update, used above 1,024 elements, whose per-element divisions
cost more than the second pass at these sizes. Both are numerically stable. Larger reductions
(ImageNet-size activations) keep inductor's choice: they were not measured. Measured with
benchmarks/compiled_step_variants.py (base against twostep, docs/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit systems
TRIM_THRESHOLD = 2**30

_applied: str | None = None


def tune_malloc(mode: str = "auto") -> str:
    """Apply the allocator setting `mode` ("auto": tuned where glibc is the allocator; "off": leave
    it). Returns what is in force, for the run's hardware summary. Once tuned, a process stays tuned
    ("off" later does not undo it)."""
    global _applied
    if mode not in ("auto", "off"):
        raise ValueError(f"malloc mode must be auto or off, not {mode!r}")
    if _applied == "tuned":
        return _applied
    if mode == "off" or not sys.platform.startswith("linux"):
        _applied = "default"
        return _applied
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        _applied = "default"
        return _applied
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _applied = "tuned" if ok else "default"
    return _applied


def malloc_state() -> str:
    """ "tuned" once tune_malloc has tuned this process, else "default"."""
    return _applied or "default"


TWO_STEP_VARIANCE_THRESHOLD = 128 * 32 * 32  # elements reduced; inductor's default is 1,024


def compile_options(device_type: str = "cpu") -> dict:
    """The inductor options compile_model passes for `device_type` (none off the CPU)."""
    return {"cpp.use_two_step_variance_threshold": TWO_STEP_VARIANCE_THRESHOLD} if device_type == "cpu" else {}


def compile_model(model, device_type: str = "cpu"):
    """torch.compile(model), on a CPU with the two-pass variance option above, scoped to this model."""
    options = compile_options(device_type)
    return torch.compile(model, options=options) if options else torch.compile(model)
