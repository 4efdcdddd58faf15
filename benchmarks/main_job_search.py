"""The main job's network search: SpeedNet width variants registered as extra models, then the
torchcls command line. Every run of docs/RESULTS.md's "How the main job's network was chosen"
is this script with the flags of its row, e.g.

    .venv/bin/python benchmarks/main_job_search.py train -a sn32_64_128 -c /tmp/run

Names: `snA_B_C` is SpeedNet with group widths A/B/C (built for the data's channel count, like
every SpeedNet); `snA_B_C_fb` the same with the whitening bias frozen at zero as well.
`speednet_mini` (the main recipe's network) is sn24_64_128.
"""

import sys

from torchcls.cli import main
from torchcls.models import register_model
from torchcls.models.cifar.speednet import SpeedNet

WIDTHS = ["32-64-128", "48-96-192", "24-48-96", "64-128-256", "24-64-128", "16-64-128"]


def _builder(widths: tuple[int, ...], frozen_bias: bool):
    def build(num_classes: int = 10, in_channels: int = 3):
        net = SpeedNet(num_classes, widths=widths, in_channels=in_channels)
        if frozen_bias:
            net.whiten.bias.requires_grad_(False)
        return net

    return build


for w in WIDTHS:
    ws = tuple(int(v) for v in w.split("-"))
    name = "sn" + w.replace("-", "_")
    register_model(family="search", name=name)(_builder(ws, False))
    register_model(family="search", name=name + "_fb")(_builder(ws, True))

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
