"""Forward, input-gradient and weight-gradient times of ResNet-20's 3x3 convolutions (batch 128,
bfloat16, channels_last and NCHW), one call each, median of 25 after 5 warm-up calls. This is the
measurement behind "oneDNN's weight gradient is the slow part" in docs/RESULTS.md.

    .venv/bin/python benchmarks/conv_backward.py [--alternatives]

--alternatives also times ways of computing the same weight gradient other than oneDNN's
(channels_last, bf16), each checked against it: `shifted_mm` (9 matrix products of the
flattened padded input, one per kernel tap, without im2col), `as_conv` (the gradient as a
forward convolution with batch and channels swapped), `fp32` (oneDNN in float32, the casts from bf16 included), `halves`
(oneDNN on each half of the batch, summed).
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

CB = torch.ops.aten.convolution_backward


def onednn_wgrad(go, x, w):
    return CB(go, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])[1]


def shifted_mm_wgrad(go, x):
    """dW[:, :, kh, kw] = G^T X shifted by kh*(W+2)+kw rows, on the zero-padded NHWC images
    flattened to rows (G padded at the bottom-right so the wrapped rows multiply zeros)."""
    n, i, h, w = x.shape
    o = go.shape[1]
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1, 0, 1)).reshape(-1, i)
    gp = F.pad(go.permute(0, 2, 3, 1), (0, 0, 0, 2, 0, 2)).reshape(-1, o)
    rows = gp.shape[0]
    out = torch.empty(3, 3, o, i, dtype=x.dtype)
    for kh in range(3):
        for kw in range(3):
            off = kh * (w + 2) + kw
            torch.mm(gp.t(), xp[off : off + rows], out=out[kh, kw])
    return out.permute(2, 3, 0, 1)


def as_conv_wgrad(go, x):
    xt = x.transpose(0, 1).contiguous(memory_format=torch.channels_last)  # (I, N, H, W)
    gt = go.transpose(0, 1).contiguous(memory_format=torch.channels_last)  # (O, N, H, W)
    return F.conv2d(xt, gt, padding=1).transpose(0, 1)  # (O, I, 3, 3)


def median_ms(fn, n=25, warm=5):
    ts = []
    for _ in range(n + warm):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts[warm:]) * 1000


def alternatives(c, hw):
    cl = torch.channels_last
    x = torch.randn(128, c, hw, hw, dtype=torch.bfloat16).contiguous(memory_format=cl)
    w = torch.randn(c, c, 3, 3, dtype=torch.bfloat16).contiguous(memory_format=cl)
    go = torch.randn(128, c, hw, hw, dtype=torch.bfloat16).contiguous(memory_format=cl)
    ref = onednn_wgrad(go, x, w).float()
    ways = {
        "onednn": lambda: onednn_wgrad(go, x, w),
        "shifted_mm": lambda: shifted_mm_wgrad(go, x),
        "as_conv": lambda: as_conv_wgrad(go, x),
        "fp32": lambda: onednn_wgrad(go.float(), x.float(), w.float()),
        "halves": lambda: onednn_wgrad(go[:64], x[:64], w) + onednn_wgrad(go[64:], x[64:], w),
    }
    parts = []
    for name, fn in ways.items():
        err = ((fn().float() - ref).abs().max() / ref.abs().max()).item()
        assert err < 0.02, f"{name} differs from oneDNN's weight gradient (relative {err:.3g})"
        parts.append(f"{name} {median_ms(fn):.3f} ms")
    print(f"  weight gradient, {c} channels, {hw}x{hw}: " + ", ".join(parts))


def bench(c, hw, cl, dtype=torch.bfloat16):
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = torch.randn(128, c, hw, hw, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(c, c, 3, 3, dtype=dtype).contiguous(memory_format=fmt)
    go = torch.randn(128, c, hw, hw, dtype=dtype).contiguous(memory_format=fmt)
    res = {"fwd": median_ms(lambda: F.conv2d(x, w, padding=1))}
    for name, mask in (("dgrad", [True, False, False]), ("wgrad", [False, True, False])):
        res[name] = median_ms(lambda mask=mask: CB(go, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask))
    print(
        f"{c} channels, {hw}x{hw}, {'channels_last' if cl else 'NCHW'}: "
        + ", ".join(f"{k} {v:.3f} ms" for k, v in res.items())
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alternatives", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)
    for c, hw in ((16, 32), (32, 16), (64, 8)):
        for cl in (True, False):
            bench(c, hw, cl)
        if args.alternatives:
            alternatives(c, hw)
