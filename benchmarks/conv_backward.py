"""Forward, input-gradient and weight-gradient times of ResNet-20's 3x3 convolutions (batch 128,
bfloat16, channels_last and NCHW), one call each, median of 25 after 5 warm-up calls. This is the
measurement behind "oneDNN's weight gradient is the slow part" in docs/RESULTS.md.

    .venv/bin/python benchmarks/conv_backward.py
"""
import statistics
import time

import torch


def bench(c, hw, cl, dtype=torch.bfloat16):
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(128, c, hw, hw, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(c, c, 3, 3, dtype=dtype).contiguous(memory_format=fmt)
    go = torch.randn(128, c, hw, hw, dtype=dtype).contiguous(memory_format=fmt)
    res = {}
    for name, mask in (("fwd", None), ("dgrad", [True, False, False]), ("wgrad", [False, True, False])):
        ts = []
        for _ in range(30):
            t = time.perf_counter()
            if mask is None:
                torch.nn.functional.conv2d(x, w, padding=1)
            else:
                torch.ops.aten.convolution_backward(go, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
            ts.append(time.perf_counter() - t)
        res[name] = statistics.median(ts[5:]) * 1000
    print(f"{c} channels, {hw}x{hw}, {'channels_last' if cl else 'NCHW'}: "
          + ", ".join(f"{k} {v:.3f} ms" for k, v in res.items()))


if __name__ == "__main__":
    torch.manual_seed(0)
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        for cl in (True, False):
            bench(c, hw, cl)
