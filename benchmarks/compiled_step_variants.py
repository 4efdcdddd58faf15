"""Throughput of a compiled ResNet-20 training step (synthetic batch 128, bf16 autocast,
channels_last, Nesterov SGD) under one inductor variant per process, as used for the "what was
tried" notes in docs/RESULTS.md (torchcls bench section). Environment settings (ONEDNN_MAX_CPU_ISA,
OMP_*, LD_PRELOAD of another allocator) are given on the command line before it.

    .venv/bin/python benchmarks/compiled_step_variants.py VARIANT [--malloc off]

VARIANT: base (the defaults), cppwrap (cpp_wrapper), copt (compiled optimizer step), simd512,
autotune (max-autotune-no-cudagraphs), twostep (BatchNorm variance as mean then squares instead of
Welford, for any reduction size), fastmath (unsafe-math and fp-contract flags for the C++ kernels),
fastmath_twostep (both), aggr (aggressive_fusion), nosplit (no split reductions), and cmodel
(torchcls's compile_model, engine/runtime.py: the two-pass variance up to 131,072 elements, as the
Trainer uses it). The code-generation hooks of torchcls 0.1 (variants plainsum, stores, masks)
were removed with the hooks.

Prints the median of 8 windows of 10 steps (images/s), the warm-up time and every window.
"""

import argparse
import statistics
import time

import torch
import torch._inductor.config as ic
import torch.nn as nn

from torchcls.engine.runtime import compile_model, tune_malloc
from torchcls.models import create_model

# inductor settings per variant (copt and autotune are handled where the step is built)
VARIANTS = {
    "base": {},
    "copt": {},
    "autotune": {},
    "cmodel": {},
    "cppwrap": {"cpp_wrapper": True},
    "simd512": {"cpp.simdlen": 512},
    "twostep": {"cpp.use_two_step_variance_threshold": 1 << 30},
    "fastmath": {"cpp.enable_unsafe_math_opt_flag": True, "cpp.enable_floating_point_contract_flag": "fast"},
    "fastmath_twostep": {
        "cpp.enable_unsafe_math_opt_flag": True,
        "cpp.enable_floating_point_contract_flag": "fast",
        "cpp.use_two_step_variance_threshold": 1 << 30,
    },
    "aggr": {"aggressive_fusion": True},
    "nosplit": {"split_reductions": False},
}


def resnet20_step(compile_fn, compile_optimizer=False):
    """One training step of ResNet-20 on a fixed synthetic batch of 128 (bf16 autocast,
    channels_last, Nesterov SGD), the model compiled by compile_fn. Also used by profile_step.py."""
    torch.manual_seed(0)
    m = create_model("resnet20").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    run = compile_fn(m)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    ostep = torch.compile(opt.step) if compile_optimizer else opt.step

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(run(x).float(), y)
        opt.zero_grad()
        loss.backward()
        ostep()

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant", choices=list(VARIANTS))
    p.add_argument("--malloc", choices=["auto", "off"], default="auto")
    a = p.parse_args()
    tune_malloc(a.malloc)
    for key, value in VARIANTS[a.variant].items():
        setattr(ic.cpp if key.startswith("cpp.") else ic, key.removeprefix("cpp."), value)
    if a.variant == "cmodel":
        compile_fn = compile_model
    else:
        mode = "max-autotune-no-cudagraphs" if a.variant == "autotune" else None
        compile_fn = lambda m: torch.compile(m, mode=mode)  # noqa: E731
    step = resnet20_step(compile_fn, compile_optimizer=a.variant == "copt")
    t = time.perf_counter()
    for _ in range(5):
        step()
    first = time.perf_counter() - t
    ws = []
    for _ in range(8):
        t = time.perf_counter()
        for _ in range(10):
            step()
        ws.append(1280 / (time.perf_counter() - t))
    print(a.variant, "images/s", round(statistics.median(ws)), "warm-up s", round(first, 1), [round(w) for w in ws])


if __name__ == "__main__":
    main()
