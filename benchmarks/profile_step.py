"""Where the time of a compiled ResNet-20 training step goes: torch.profiler over 10 steps
(synthetic batch 128, bf16 autocast, channels_last, Nesterov SGD, tuned allocator, torchcls's
compile_model), after 8 warm-up steps; prints the top operators and inductor kernels by self time.

    .venv/bin/python benchmarks/profile_step.py [--rows 25]
"""
import argparse

import torch
import torch._inductor.config as ic
from torch import nn
from torch.profiler import ProfilerActivity, profile

from torchcls.engine.runtime import compile_model, tune_malloc
from torchcls.models import create_model


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=25)
    a = p.parse_args()
    tune_malloc("auto")
    ic.cpp.descriptive_names = "original_aten"
    ic.cpp.enable_kernel_profile = True  # each generated C++ kernel shows in the profile by name
    torch.manual_seed(0)
    m = create_model("resnet20").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    run = compile_model(m, "cpu")
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(run(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(8):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(10):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
