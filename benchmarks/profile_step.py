"""Where the time of a compiled ResNet-20 training step goes: torch.profiler over 10 steps
(synthetic batch 128, bf16 autocast, channels_last, Nesterov SGD, tuned allocator, torchcls's
compile_model), after 8 warm-up steps; prints the top operators and inductor kernels by self time,
then the total of the generated kernels a step.

    .venv/bin/python benchmarks/profile_step.py [--rows 25] [--fixes plain_sums,half_stores]

--fixes: compile_model's code-generation fixes to apply (default: all of CODEGEN_FIXES; "none"
for none), to see what each changes kernel by kernel.
"""
import argparse

import torch._inductor.config as ic
from compiled_step_variants import resnet20_step  # this folder is on sys.path when run as a script
from torch.profiler import ProfilerActivity, profile

from torchcls.engine.runtime import CODEGEN_FIXES, compile_model, tune_malloc


def parse_fixes(text: str) -> tuple:
    """A --fixes argument: names from CODEGEN_FIXES, comma-separated, or "none"."""
    return () if text == "none" else tuple(text.split(","))


def profile_compiled_step(fixes, steps: int = 10):
    """torch.profiler's averages over `steps` steps of the ResNet-20 step compiled by compile_model
    with `fixes`, after 8 warm-up steps; each generated C++ kernel shows in them by name. Also used
    by codegen_kernels.py."""
    ic.cpp.descriptive_names = "original_aten"
    ic.cpp.enable_kernel_profile = True
    step = resnet20_step(lambda m: compile_model(m, "cpu", fixes))
    for _ in range(8):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--fixes", default=",".join(CODEGEN_FIXES))
    a = p.parse_args()
    tune_malloc("auto")
    events = profile_compiled_step(parse_fixes(a.fixes))
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=60))
    kernels = sum(e.self_cpu_time_total for e in events if e.key.startswith("graph_"))
    print(f"generated kernels: {kernels / 10 / 1000:.1f} ms a step; everything: "
          f"{sum(e.self_cpu_time_total for e in events) / 10 / 1000:.1f} ms a step (fixes: {a.fixes})")

if __name__ == "__main__":
    main()
