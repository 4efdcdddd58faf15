"""`torchcls models`: the registered models with their parameter counts and forward FLOPs.

    model_rows(["resnet20", "mobilenet"])  # -> [{"name": ..., "params": ..., "gflops": ...}, ...]
    print(format_table(rows, "markdown"))

FLOPs are those of one forward pass of one image (batch of 1, eval mode, no grad) at the
model's input size (32x32 for CIFAR models, 224x224 for ImageNet ones), counted by
`torch.utils.flop_counter.FlopCounterMode`: a multiply-accumulate counts as 2 FLOPs, and
only convolutions, matrix products and attention are counted (element-wise ops,
normalisation and pooling are not). Parameter counts are at 10 classes for CIFAR models
and 1000 for ImageNet ones.

To be fast, a model is built under `torch.device("meta")` (shapes only, no memory, no
initialisation cost) and the forward pass runs on meta tensors, which gives the
same shapes and therefore the same counts; a model that cannot run that way is built and
run for real on the CPU.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import warnings

import torch
import torch.nn as nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from torchcls.errors import UserError
from torchcls.models.registry import DEFAULT_NUM_CLASSES, create_model, get_entry, input_channels, list_models

COLUMNS = ("name", "family", "dataset", "input_size", "params", "params_m", "gflops")
FORMATS = ("text", "json", "csv", "markdown")
TORCHVISION_PREFIX = "tv_"
FLOPS_NOTE = (
    "GFLOPs: one forward pass of one image at the input size, counted by "
    "torch.utils.flop_counter.FlopCounterMode (FLOPs = 2 x multiply-accumulates of "
    "convolutions, matmuls and attention). Params at 10 classes (CIFAR) / 1000 (ImageNet)."
)


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Q @ K^T and scores @ V as two batched matmuls: 2 FLOPs per multiply-accumulate."""
    *batch, s_q, d_qk = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    n = 1
    for b in batch:
        n *= b
    return 2 * n * s_q * s_k * d_qk + 2 * n * s_q * s_k * d_v


def _extra_flop_formulas() -> dict:
    """A formula for the CPU kernel of scaled dot-product attention, which the counter lacks
    (it counts the CUDA kernels; on the meta device attention decomposes into counted matmuls)."""
    cpu_op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_op is None or cpu_op in flop_counter.flop_registry:
        return {}
    return {cpu_op: _sdpa_flops}


def count_params_and_flops(model: nn.Module, input_size: int, device: str) -> tuple[int, int]:
    """(parameters, forward FLOPs of one input_size x input_size image with the model's own channel
    count, `models.input_channels`) of a built model, on `device` ("meta": shapes only)."""
    params = sum(p.numel() for p in model.parameters())
    model.eval()
    x = torch.zeros(1, input_channels(model), input_size, input_size, device=device)
    # nn.MultiheadAttention's inference fast path is one fused op the counter does not know;
    # switch it off so attention is counted (as linear layers + scaled dot-product attention)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas()) as counter:
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return params, counter.get_total_flops()


def count_model(name: str) -> tuple[int, int]:
    """(parameters, forward FLOPs for one image) of registered model `name`."""
    entry = get_entry(name)
    num_classes = entry.num_classes
    with warnings.catch_warnings():
        # torchvision's GoogLeNet / Inception warn about a future change of their init
        warnings.simplefilter("ignore", FutureWarning)
        try:
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                model = create_model(name, num_classes=num_classes)
            return count_params_and_flops(model.to("meta"), entry.input_size, "meta")
        except Exception:  # noqa: BLE001 - the model needs real data (.item(), .tolist(), ...):
            pass  # build and run it for real; a genuine error in the model surfaces there
        model = create_model(name, num_classes=num_classes)
        return count_params_and_flops(model, entry.input_size, "cpu")


def default_names(dataset: str | None = None, include_torchvision: bool = False) -> list[str]:
    """The fixed (non-family) entries, CIFAR ones first; torchvision ones only on request."""
    names = [n for n in list_models(dataset=dataset) if include_torchvision or not n.startswith(TORCHVISION_PREFIX)]
    return sorted(names, key=lambda n: (get_entry(n).dataset, n))


def model_rows(
    names: list[str] | None = None, dataset: str | None = None, include_torchvision: bool = False
) -> list[dict]:
    """One row per model: name, family, dataset, input_size, params, params_m, gflops.

    `names` defaults to every fixed entry (torchvision's tv_ models only when
    `include_torchvision`), optionally only those of `dataset` ("cifar"/"imagenet").
    """
    if names is None:
        names = default_names(dataset, include_torchvision)
    rows = []
    for name in names:
        entry = get_entry(name)
        params, flops = count_model(name)
        rows.append(
            {
                "name": name,
                "family": entry.family,
                "dataset": entry.dataset,
                "input_size": entry.input_size,
                "params": params,
                "params_m": round(params / 1e6, 4),
                "gflops": round(flops / 1e9, 6),
            }
        )
    return rows


# --- formatting --------------------------------------------------------------------------

_HEADINGS = {
    "name": "model",
    "family": "family",
    "dataset": "dataset",
    "input_size": "input",
    "params": "params",
    "params_m": "params (M)",
    "gflops": "GFLOPs",
}
_RIGHT = {"input_size", "params", "params_m", "gflops"}


def _cells(row: dict) -> list[str]:
    return [
        row["name"],
        row["family"],
        row["dataset"],
        f"{row['input_size']}x{row['input_size']}",
        f"{row['params']:,}",
        f"{row['params_m']:.2f}",
        f"{row['gflops']:.3f}",
    ]


def format_table(rows: list[dict], fmt: str = "text") -> str:
    """The rows as text (aligned columns), json (a list of objects), csv or a markdown table."""
    if fmt == "json":
        return json.dumps([{k: r[k] for k in COLUMNS} for r in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n")
    headings = [_HEADINGS[c] for c in COLUMNS]
    body = [_cells(r) for r in rows]
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(headings) + " |",
            "| " + " | ".join("---:" if c in _RIGHT else "---" for c in COLUMNS) + " |",
        ]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    if fmt == "text":
        widths = [max(len(h), *(len(cells[i]) for cells in body)) if body else len(h) for i, h in enumerate(headings)]

        def line(cells):
            return "  ".join(
                c.rjust(w) if col in _RIGHT else c.ljust(w) for c, w, col in zip(cells, widths, COLUMNS, strict=True)
            ).rstrip()

        return "\n".join([line(headings), line(["-" * w for w in widths])] + [line(c) for c in body])
    raise ValueError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")


# --- the command -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        metavar="MODEL",
        help="models to show (default: every registered model but the family "
        "builders; a family builder named here is shown at its default options)",
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    parser.add_argument(
        "--dataset",
        choices=sorted(DEFAULT_NUM_CLASSES),
        help="only the models for this input size: cifar (32x32) or imagenet (224x224)",
    )
    parser.add_argument(
        "--include-torchvision",
        action="store_true",
        help="also count torchvision's models (tv_*); there are ~80 and some are "
        "huge, so by default they are not counted: text and markdown output "
        "end with a line naming them, json and csv leave them out",
    )


def run(args: argparse.Namespace) -> int:
    names = list(args.names) or None
    dataset = getattr(args, "dataset", None)
    include_tv = getattr(args, "include_torchvision", False)
    fmt = getattr(args, "format", "text")
    if names is not None:
        try:
            for n in names:
                get_entry(n)
        except ValueError as err:
            raise UserError(str(err)) from None
        if dataset is not None:
            names = [n for n in names if get_entry(n).dataset == dataset]
    rows = model_rows(names, dataset=dataset, include_torchvision=include_tv)
    out = format_table(rows, fmt)
    if fmt in ("text", "markdown"):
        out = FLOPS_NOTE + "\n\n" + out
        if names is None and not include_tv and dataset in (None, "imagenet"):
            tv = [n for n in list_models(dataset="imagenet") if n.startswith(TORCHVISION_PREFIX)]
            if tv:
                out += (
                    f"\n\nAlso available, not counted ({len(tv)} torchvision models; "
                    f"--include-torchvision counts them): {', '.join(tv)}"
                )
    print(out)
    return 0
