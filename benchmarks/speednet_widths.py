"""Training and evaluation images/s of SpeedNet width variants at 28x28, synthetic batches.

    .venv/bin/python benchmarks/speednet_widths.py --amp off --batch 512 24-64-128 32-64-128
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 .venv/bin/python benchmarks/speednet_widths.py ...

A training step is forward, loss, backward and a Nesterov SGD step on one fixed batch (no data
path: `torchcls bench` times the whole step); the figure is the median of 5 windows of 5 steps
after 3 warm-up steps; evaluation is one forward pass of 1,000 images after one warm-up pass.
`--in-channels 3` builds the RGB variant (grayscale repeated, as models without `in_channels` get).
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from torchcls.engine.setup import hardware_summary
from torchcls.models import create_model
from torchcls.models.cifar.speednet import SpeedNet


def images_per_s(name: str, amp: bool, batch: int, in_channels: int, channels_last: bool) -> tuple[float, float, int]:
    torch.manual_seed(0)
    if name == "resnet20":
        net, in_channels = create_model("resnet20"), 3
    else:
        net = SpeedNet(10, widths=tuple(int(v) for v in name.split("-")), in_channels=in_channels)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, in_channels, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()

    for _ in range(3):
        step()
    windows = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(5):
            step()
        windows.append(5 * batch / (time.perf_counter() - t))
    net.eval()
    xe = torch.randn(1000, in_channels, 28, 28).contiguous(memory_format=fmt)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        net(xe)
        t = time.perf_counter()
        net(xe)
        ev = 1000 / (time.perf_counter() - t)
    return statistics.median(windows), ev, sum(p.numel() for p in net.parameters())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("widths", nargs="+", help="A-B-C group widths, or resnet20")
    p.add_argument("--amp", choices=["off", "bf16"], default="off")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--channels-last", choices=["on", "off"], default="on")
    a = p.parse_args()
    hw = hardware_summary(torch.device("cpu"), 1)
    print(f"machine: {hw['cpu']} ({hw['cpu_isa']}); amp {a.amp}, batch {a.batch}, channels_last {a.channels_last}")
    for name in a.widths:
        train, ev, params = images_per_s(name, a.amp == "bf16", a.batch, a.in_channels, a.channels_last == "on")
        print(f"{name:12s} params {params:8d}  train {train:7.0f} images/s  eval {ev:7.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
