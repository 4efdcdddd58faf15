"""Where the time of a compiled ResNet-20 training step goes: torch.profiler over 10 steps
(synthetic batch 128, bf16 autocast, channels_last, Nesterov SGD, tuned allocator, torchcls's
compile_model), after 8 warm-up steps; prints the top operators and inductor kernels by self time,
then the total of the generated kernels a step.

    .venv/bin/python benchmarks/profile_step.py [--rows 25]
"""

import argparse

import torch._inductor.config as ic
from compiled_step_variants import resnet20_step  # this folder is on sys.path when run as a script
from torch.profiler import ProfilerActivity, profile

from torchcls.engine.runtime import compile_model, tune_malloc


def profile_compiled_step(steps: int = 10):
    """torch.profiler's averages over `steps` steps of the ResNet-20 step compiled by compile_model,
    after 8 warm-up steps; each generated C++ kernel shows in them by name."""
    ic.cpp.descriptive_names = "original_aten"
    ic.cpp.enable_kernel_profile = True
    step = resnet20_step(compile_model)
    for _ in range(8):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=25)
    a = p.parse_args()
    tune_malloc("auto")
    events = profile_compiled_step()
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=60))
    kernels = sum(e.self_cpu_time_total for e in events if e.key.startswith("graph_"))
    print(
        f"generated kernels: {kernels / 10 / 1000:.1f} ms a step; everything: "
        f"{sum(e.self_cpu_time_total for e in events) / 10 / 1000:.1f} ms a step"
    )


if __name__ == "__main__":
    main()
