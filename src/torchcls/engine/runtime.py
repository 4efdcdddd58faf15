"""Runtime settings of a CPU run: the C allocator (process-wide) and torch.compile's settings (per model).

glibc's malloc serves requests above a dynamic threshold (128 KiB at first) with fresh mmap()s and
gives the top of the heap back to the kernel when more than 128 KiB is free there. A training step
allocates and frees the same activation and gradient buffers (megabytes each) every step, so with
the defaults many of them come back as new pages that the kernel must fault in and zero, step after
step. `tune_malloc` keeps them in the heap instead: requests up to 32 MiB come from the heap
(M_MMAP_THRESHOLD) and up to 1 GiB of free heap top is kept (M_TRIM_THRESHOLD). The price is that
freed memory stays with the process (its peak, not its working set, is what it holds). Measured in
docs/RESULTS.md ("The parts"): it matters most for torch.compile'd steps.

`compile_model` is torch.compile with two changes to inductor's CPU code, for that model only.
First, variances (BatchNorm's in a CIFAR network) over up to 131,072 elements, a batch of 128 at
32x32, are computed as a mean and then a sum of squared deviations (two passes over the
activations) instead of inductor's Welford update, used above 1,024 elements, whose per-element
divisions cost more than the second pass at these sizes. Both are numerically stable. Larger
reductions (ImageNet-size activations) keep inductor's choice: they were not measured. Measured
with benchmarks/compiled_step_variants.py (base against twostep, docs/RESULTS.md).

Second, float32 sums over 4,097 to 131,072 elements (BatchNorm's means, variances and gradient
sums) accumulate in registers, as they do below that size, instead of through inductor's
cascade-summation helper, whose running sum lives in a heap array that is loaded and stored for
every element or vector: a chain of dependent memory round trips that made these reductions
latency-bound. An accumulator (a SIMD lane, or a scalar in unvectorised code) then takes up to
131,072 float32 additions, an expected relative error of about sqrt(n) x 6e-8 = 2e-5 at most,
far below bf16 training's noise; larger sums keep the helper (not measured).
tests/test_speed_parts.py checks the results against eager PyTorch. Measured with
benchmarks/compiled_step_variants.py (cmodel against plainsum, docs/RESULTS.md).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys

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
    """"tuned" once tune_malloc has tuned this process, else "default"."""
    return _applied or "default"


TWO_STEP_VARIANCE_THRESHOLD = 128 * 32 * 32  # elements reduced; inductor's default is 1,024
PLAIN_SUM_MAX_ELEMENTS = 128 * 32 * 32  # larger float sums keep inductor's cascade summation


def _plain_sums_hook():
    """The marker pass class of the hook below, installing the hook on first use; None where this
    torch's inductor has no `CppKernel.need_use_acc_helper` to wrap.

    The hook wraps inductor's CPU code-generation decision (torch 2.14) so that in compilations
    whose post-grad passes include the marker, a float32 sum over 4,097 to PLAIN_SUM_MAX_ELEMENTS
    elements accumulates in registers instead of through the cascade-summation helper. Other
    compilations get inductor's own decision. The marker changes nothing in the graph; as a
    CustomGraphPass its uuid() enters inductor's cache keys, so cached code of one kind is never
    served to a compilation that wants the other."""
    from torch._inductor.codegen import cpp as cpp_codegen

    kernel = getattr(cpp_codegen, "CppKernel", None)
    original = getattr(kernel, "need_use_acc_helper", None)
    if original is None:
        return None
    if hasattr(original, "torchcls_marker"):  # installed already (this import or an earlier one)
        return original.torchcls_marker

    import torch._inductor.config as inductor_config
    from torch._inductor.custom_graph_pass import CustomGraphPass, get_custom_graph_passes
    from torch._inductor.virtualized import V

    class PlainFloatSums(CustomGraphPass):
        def __call__(self, graph):
            return None

        def uuid(self):
            return f"torchcls.plain_float_sums.v1.{PLAIN_SUM_MAX_ELEMENTS}"

    def need_use_acc_helper(self, reduction_type, dtype, use_scalar):
        if (reduction_type == "sum" and self.call_ranges is not None
                and any(isinstance(p, PlainFloatSums)
                        for p in get_custom_graph_passes(inductor_config.post_grad_custom_post_pass))):
            size = math.prod(self.call_ranges[self.reduction_depth:])  # as inductor computes it
            if V.graph.sizevars.statically_known_leq(size, PLAIN_SUM_MAX_ELEMENTS):
                return False
        return original(self, reduction_type, dtype, use_scalar)

    need_use_acc_helper.torchcls_marker = PlainFloatSums
    kernel.need_use_acc_helper = need_use_acc_helper
    return PlainFloatSums


def compile_options(device_type: str = "cpu", plain_sums: bool = True) -> dict:
    """The inductor options compile_model passes for `device_type` (empty off the CPU). The
    marker is added to any post-grad passes already configured, which keep running."""
    if device_type != "cpu":
        return {}
    options = {"cpp.use_two_step_variance_threshold": TWO_STEP_VARIANCE_THRESHOLD}
    marker = _plain_sums_hook() if plain_sums else None
    if marker is not None:
        import torch._inductor.config as inductor_config
        from torch._inductor.custom_graph_pass import get_custom_graph_passes

        options["post_grad_custom_post_pass"] = (
            *get_custom_graph_passes(inductor_config.post_grad_custom_post_pass), marker())
    return options


def compile_model(model, device_type: str = "cpu", plain_sums: bool = True):
    """torch.compile(model), on a CPU with the settings above (two-pass variance; float sums in
    registers unless plain_sums=False), scoped to this model's compilation (forward and backward);
    other compilations in the process are unaffected."""
    import torch
    options = compile_options(device_type, plain_sums)
    return torch.compile(model, options=options) if options else torch.compile(model)
