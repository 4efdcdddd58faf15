"""What compile_model's code-generation fixes change, kernel by kernel: the compiled ResNet-20
training step of profile_step.py (synthetic batch 128, bf16 autocast, channels_last) is built
twice in one process, with the `--base` fixes and with all of them (CODEGEN_FIXES), and each
generated kernel's time a step (torch.profiler over 10 steps after 8 warm-up steps) is printed
side by side, for the kernels of at least 100 us a step whose time changed by more than
--min-change, then the totals.

    .venv/bin/python benchmarks/codegen_kernels.py [--base plain_sums] [--min-change 0.15]

The fixes change how bytes move, not the fusion, so the two builds have the same kernels by name
(the profiler's names, without the graph number; kernels that share a name are added together).
"""
import argparse
import re

from profile_step import parse_fixes, profile_compiled_step  # this folder is on sys.path when run as a script

from torchcls.engine.runtime import CODEGEN_FIXES, tune_malloc


def kernel_times(fixes, steps=10):
    """{generated kernel name: microseconds a step} for the step compiled with `fixes`."""
    return {re.sub(r"^graph_\d+_", "", e.key): e.self_cpu_time_total / steps
            for e in profile_compiled_step(fixes, steps) if e.key.startswith("graph_")}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="plain_sums", help='fixes of the first build, comma-separated, or "none"')
    p.add_argument("--min-change", type=float, default=0.15)
    a = p.parse_args()
    tune_malloc("auto")
    before, after = kernel_times(parse_fixes(a.base)), kernel_times(CODEGEN_FIXES)
    print(f"{'before us':>10} {'after us':>10} {'ratio':>6}  kernel (us a step; before: {a.base}; after: all fixes)")
    for name in sorted(before, key=lambda n: -before[n]):
        if (name in after and max(before[name], after[name]) >= 100
                and abs(after[name] - before[name]) > a.min_change * before[name]):
            print(f"{before[name]:10.0f} {after[name]:10.0f} {before[name] / max(after[name], 1e-9):6.2f}  {name[-90:]}")
    print(f"all generated kernels: {sum(before.values()) / 1000:.1f} ms a step before, "
          f"{sum(after.values()) / 1000:.1f} ms after ({len(before)} and {len(after)} kernels)")


if __name__ == "__main__":
    main()
