"""`torchcls export CHECKPOINT --format onnx|torchscript|pt2 [-o FILE]`: a checkpoint's model as a
file that runs without torchcls, checked against PyTorch before it is called done.

Formats: ONNX through PyTorch's exporter (torch.onnx.export(dynamo=True), which needs onnxscript),
TorchScript (torch.jit.trace) and torch.export's ExportedProgram (.pt2, torch.export.save). The
batch dimension is dynamic in all three. FILE defaults to the checkpoint's name with .onnx,
.torchscript.pt or .pt2 for .pth.tar.

The model's input: with --include-preprocessing (the default) the normalisation is part of the
graph, and it takes the image after the file preprocessing (decode, resize, crop: the sidecar's
"preprocessing") as (batch, C, H, W) float32 in [0, 1] (uint8 / 255), or uint8 0..255 with
--input-dtype uint8, C being the data's channels (1 for a grayscale data set; the graph repeats it
where the model takes 3). With --no-include-preprocessing it takes what the PyTorch model takes:
float32 (x / 255 - mean) / std with the model's channel count. The output is float32 logits
(batch, classes). The sidecar's "input" and "output" fields say this for each file.

Metadata (classes, input size, mean, std, preprocessing, architecture, channels, torchcls version,
the check's figures) is written to a JSON sidecar FILE.json (FILE + ".json", so exports of one
checkpoint in several formats never share one) and into the file itself: ONNX metadata_props
(the whole record as JSON under "torchcls", the main fields under their own names), and an extra
file "torchcls.json" inside TorchScript and .pt2 archives.

The check: the exported model (ONNX: in onnxruntime) and the PyTorch model run the same real
images: the first --check-images test images of the checkpoint's data set, or the files --images
names. The command prints the largest absolute logit difference and the top-1 agreement, and fails
when the difference exceeds --atol x max(1, largest |logit|); then FILE is not written (the export
goes to a temporary file that is renamed to FILE only once it has passed).
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from torchcls import __version__
from torchcls.commands.eval import (
    EXPORT_EXTRA,
    graph_input_norm,
    import_onnxruntime,
    split_loader,
)
from torchcls.data.folder import IMG_EXTENSIONS
from torchcls.engine.step import prepare
from torchcls.errors import UserError
from torchcls.inference import UnreadableImage, load_checkpoint_model, preprocess_images, preprocessing_for
from torchcls.models import input_channels

SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}
TITLES = {"onnx": "ONNX", "torchscript": "TorchScript", "pt2": "torch.export (.pt2)"}
CHECKPOINT_SUFFIXES = (".pth.tar", ".pth", ".pt", ".tar", ".ckpt")


class Deployable(nn.Module):
    """The model with its normalisation in front: (N, C, H, W) uint8 0..255 or float in [0, 1] with
    the data's C channels -> (x / 255 - mean) / std (computed as x * mul - sub), a gray channel
    repeated to the model's channel count -> the model's logits."""

    def __init__(self, model: nn.Module, mean, std, model_channels: int, uint8: bool):
        super().__init__()
        self.model = model
        m, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
        scale = 255.0 if uint8 else 1.0
        self.register_buffer("mul", (1.0 / (scale * s)).to(torch.float32).view(1, -1, 1, 1))
        self.register_buffer("sub", (m / s).to(torch.float32).view(1, -1, 1, 1))
        self.repeat = model_channels if len(mean) == 1 and model_channels != 1 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32) * self.mul - self.sub
        if self.repeat:
            x = x.expand(-1, self.repeat, -1, -1)
        return self.model(x)


def import_onnx_exporter():
    """onnxscript (torch.onnx's exporter) and onnx, or a UserError naming the extra."""
    try:
        import onnx  # noqa: F401, PLC0415 - optional: the [export] extra
        import onnxscript  # noqa: F401, PLC0415 - optional: the [export] extra
    except ImportError:
        raise UserError(f"ONNX export needs onnx and onnxscript, from the export extra: {EXPORT_EXTRA}") from None


def default_output(checkpoint, fmt: str) -> Path:
    """model_best.pth.tar -> model_best.onnx (.torchscript.pt, .pt2) in the checkpoint's folder."""
    p = Path(checkpoint)
    name = next((p.name[: -len(s)] for s in CHECKPOINT_SUFFIXES if p.name.endswith(s)), p.name)
    return p.with_name(name + SUFFIXES[fmt])


def sidecar_path(out: Path) -> Path:
    return Path(str(out) + ".json")


def export_metadata(state: dict, model: nn.Module, fmt: str, ns: argparse.Namespace) -> dict:
    """What the exported file is and takes: the sidecar's content (the check's figures are added later)."""
    pre = preprocessing_for(state)
    model_ch, size = input_channels(model), pre.size
    baked = bool(ns.include_preprocessing)
    dtype = ns.input_dtype if baked else "float32"
    ch = len(state["mean"]) if baked else model_ch
    if not baked:
        values, rng = "(x / 255 - mean) / std per channel of the preprocessed image", "normalized"
    elif dtype == "uint8":
        values, rng = "the preprocessed image's pixel values 0..255", "[0, 255]"
    else:
        values, rng = "the preprocessed image's pixel values / 255", "[0, 1]"
    note = "; the graph normalises with mean and std" if baked else ""
    if baked and ch == 1 and model_ch != 1:
        note += f" and repeats the gray channel to the model's {model_ch}"
    cfg = state.get("config") or {}
    return {
        "format": fmt, "torchcls_version": __version__, "arch": state["arch"],
        "model_kwargs": state.get("model_kwargs", {}), "num_classes": int(state["num_classes"]),
        "classes": list(state.get("classes") or [str(i) for i in range(int(state["num_classes"]))]),
        "dataset": state.get("dataset"), "data_dir": cfg.get("data_dir"), "input_size": size,
        "mean": list(state["mean"]), "std": list(state["std"]), "input_channels": ch, "model_channels": model_ch,
        "preprocessing": {**pre.to_dict(), "steps": pre.describe()},
        "input": {"name": "images", "dtype": dtype, "layout": "NCHW", "shape": ["batch", ch, size, size],
                  "channels": ch, "range": rng, "normalization_in_graph": baked,
                  "description": f"{dtype} (batch, {ch}, {size}, {size}): {values}{note}"},
        "output": {"name": "logits", "dtype": "float32", "shape": ["batch", int(state["num_classes"])],
                   "description": "class scores (logits) in the order of `classes`; softmax gives probabilities"},
        "checkpoint": str(ns.checkpoint), "epoch": state.get("epoch"), "best_acc": state.get("best_acc"),
    }  # fmt: skip


def onnx_metadata_props(meta: dict) -> dict[str, str]:
    """ONNX metadata_props (strings only): the whole record under "torchcls", the main fields by name."""
    props = {"torchcls": json.dumps(meta)}
    for key in ("arch", "dataset", "torchcls_version"):
        props[key] = str(meta[key])
    for key in ("classes", "input_size", "mean", "std", "input_channels", "preprocessing", "input", "output"):
        props[key] = json.dumps(meta[key])
    return props


# ----------------------------------------------------------------------------- writing and loading


def _batch_dim():
    return torch.export.Dim("batch", min=1, max=1 << 20)


def write_export(fmt: str, module: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    """`module` exported to `path` in `fmt`, with a dynamic batch dimension and `meta` inside."""
    extra = {"torchcls.json": json.dumps(meta)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' notices; the check below is what counts
        if fmt == "onnx":
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=["images"],
                                        output_names=["logits"], dynamic_shapes=({0: _batch_dim()},),
                                        verbose=False)  # fmt: skip
            program.model.metadata_props.update(onnx_metadata_props(meta))
            program.save(str(path), external_data=False)
        elif fmt == "torchscript":
            traced = torch.jit.trace(module, (example,), check_trace=False)
            torch.jit.save(traced, str(path), _extra_files=extra)
        else:
            program = torch.export.export(module, (example,), dynamic_shapes=({0: _batch_dim()},))
            torch.export.save(program, str(path), extra_files=extra)


def load_export(fmt: str, path: Path):
    """A function running the exported file at `path` on a torch batch, returning float32 logits."""
    if fmt == "onnx":
        ort = import_onnxruntime()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.contiguous().numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()

    def run(x):
        with torch.no_grad():
            return module(x).float()

    return run


# ----------------------------------------------------------------------------- the check


def _image_files(paths) -> list[str]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(str(f) for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS))
        elif p.is_file():
            files.append(str(p))
        else:
            raise UserError(f"--images {p} does not exist")
    if not files:
        raise UserError(f"--images {' '.join(map(str, paths))} holds no image files ({', '.join(IMG_EXTENSIONS)})")
    return files


def check_images(state: dict, ns: argparse.Namespace) -> tuple[torch.Tensor, str]:
    """(uint8 batch, what it is) of the images the check runs: --images, else the data set's test split."""
    n = ns.check_images
    if ns.images:
        try:
            images = preprocess_images(_image_files(ns.images)[:n], preprocessing_for(state))
        except UnreadableImage as e:
            raise UserError(f"--images {e.path}: {e.reason}; remove it or name other images") from None
        return images, f"{len(images)} image file(s)"
    dataset = ns.dataset or state.get("dataset")
    if dataset is None:
        raise UserError(f"{ns.checkpoint} does not name its data set; pass --images FILE_OR_DIR ... to check with")
    try:
        loader, _, _, split = split_loader(state, dataset, ns.data_dir, "test", n, torch.device("cpu"), limit=n)
        images = torch.cat([x for x, _ in loader])[:n]
    except UserError as e:
        raise UserError(f"no images to check the export with ({e}); pass --images FILE_OR_DIR ...") from None
    return images, f"{len(images)} {dataset} {split} images"


def compare(run_exported, model: nn.Module, images: torch.Tensor, meta: dict, atol: float) -> dict:
    """The exported model against the PyTorch one (float32) on `images` (uint8), the first image
    alone (batch 1) and the rest as one batch."""
    with torch.no_grad():
        ref = model(prepare(images, meta["mean"], meta["std"], False, meta["model_channels"])).float()
    mean, std, channels = graph_input_norm(meta)
    x = images if meta["input"]["dtype"] == "uint8" else prepare(images, mean, std, False, channels)
    parts = [run_exported(x[:1])] + ([run_exported(x[1:])] if len(x) > 1 else [])
    got = torch.cat([p.float() for p in parts])
    if got.shape != ref.shape:
        note = f"output shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
        return {"images": len(x), "max_abs_diff": float("inf"), "tolerance": 0.0, "passed": False,
                "top1_agreement": 0.0, "note": note}  # fmt: skip
    diff = float((got - ref).abs().max())
    tol = atol * max(1.0, float(ref.abs().max()))
    agree = int((got.argmax(1) == ref.argmax(1)).sum())
    return {"images": len(x), "max_abs_diff": diff, "tolerance": tol, "atol": atol,
            "top1_agreement": 100.0 * agree / len(x), "top1_agree": agree,
            "passed": diff <= tol}  # fmt: skip


# ----------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint")
    p.add_argument("-f", "--format", choices=list(SUFFIXES), required=True,
                   help="onnx (needs the export extra), torchscript or pt2 (torch.export)")  # fmt: skip
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="default: the checkpoint's name with .onnx, .torchscript.pt or .pt2; the metadata goes "
                   "to FILE.json")  # fmt: skip
    p.add_argument("--include-preprocessing", action=argparse.BooleanOptionalAction, default=True,
                   help="normalise inside the graph, so it takes images in [0, 1] (or uint8, --input-dtype) "
                   "with the data's channels (default: on); off: it takes normalised input, as the PyTorch "
                   "model does")  # fmt: skip
    p.add_argument("--input-dtype", choices=["float32", "uint8"], default="float32",
                   help="with --include-preprocessing: float32 in [0, 1] (default) or uint8 0..255")  # fmt: skip
    p.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="PATH",
        help="check with these image files (or folders of them) instead of the data set's test images",
    )
    p.add_argument("--check-images", type=int, default=100, metavar="N", help="images the check runs (default 100)")
    p.add_argument("--atol", type=float, default=1e-3,
                   help="fail when the largest |logit difference| exceeds ATOL x max(1, largest |logit|) "
                   "(default 1e-3; float32 exports differ by ~1e-6 of that)")  # fmt: skip
    p.add_argument("-d", "--dataset", default=None, help="the check's data set (default: the checkpoint's)")
    p.add_argument("--data-dir", default=None)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def run(ns: argparse.Namespace) -> int:
    if ns.check_images < 1 or not ns.atol >= 0:
        raise UserError(f"--check-images must be positive and --atol >= 0, got {ns.check_images} and {ns.atol}")
    if ns.input_dtype == "uint8" and not ns.include_preprocessing:
        raise UserError("--input-dtype uint8 needs --include-preprocessing (the graph then scales by 1/255)")
    if ns.format == "onnx":
        import_onnx_exporter()
        import_onnxruntime()
    model, state = load_checkpoint_model(ns.checkpoint, torch.device("cpu"), channels_last=False)
    model.eval().requires_grad_(False)
    meta = export_metadata(state, model, ns.format, ns)
    images, source = check_images(state, ns)
    module = model
    if ns.include_preprocessing:
        module = Deployable(model, state["mean"], state["std"], meta["model_channels"], ns.input_dtype == "uint8")
    mean, std, channels = graph_input_norm(meta)
    example = images[:2] if ns.input_dtype == "uint8" and ns.include_preprocessing else prepare(
        images[:2], mean, std, False, channels)  # fmt: skip
    if len(example) < 2:  # an example batch of 1 would make the exporters fix the batch size to 1
        example = torch.cat([example, example])
    out = Path(ns.output) if ns.output else default_output(ns.checkpoint, ns.format)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}{SUFFIXES[ns.format]}")
    try:
        try:
            write_export(ns.format, module.eval(), example, tmp, meta)
            result = compare(load_export(ns.format, tmp), model, images, meta, ns.atol)
        except UserError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise UserError(
                f"could not export {state['arch']} to {TITLES[ns.format]}: {type(e).__name__}: {first}"
            ) from None
        line = (f"checked on {source}: max |logit difference| {result['max_abs_diff']:.2e} (tolerance "
                f"{result['tolerance']:.2e}), top-1 agreement {result['top1_agreement']:.2f}% "
                f"({result.get('top1_agree', 0)}/{result['images']})")  # fmt: skip
        if not result["passed"]:
            raise UserError(f"the {TITLES[ns.format]} export does not match PyTorch: {line}; {out} was not written")
        meta["check"] = {"source": source, **result}
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    _write_json(sidecar_path(out), meta)
    print(f"{TITLES[ns.format]} export of {state['arch']}: input {meta['input']['description']}")
    print(line)
    print(f"wrote {out} and {sidecar_path(out)}")
    return 0
