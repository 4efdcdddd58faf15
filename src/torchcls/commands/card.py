"""`torchcls card CHECKPOINT`: what a checkpoint is, from the checkpoint alone (and the run's
results.json when it sits beside it), in the spirit of torchvision's `Weights.meta`:

    card = checkpoint_card("checkpoints/cifar10/resnet20/model_best.pth.tar")
    card["num_params"], card["gflops"], card["categories"], card["metrics"]["best_acc"], card["command"]
    print(format_card(card, "markdown"))

Fields: the architecture and its arguments, parameters, GFLOPs (counted as `torchcls models` counts
them, at the checkpoint's own input size and channels), classes, input size, preprocessing, mean
and std, the data set, the recipe and the `torchcls train` command that reproduces the run (its
recipe plus the flags whose values differ from the recipe's and the defaults), the epoch and the
accuracy figures saved with the weights, the run's final figures, hardware and wall time from its
results.json, and the torchcls version that wrote it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import torch
import torch.nn as nn

from torchcls.commands import train as train_cmd
from torchcls.commands.models import count_params_and_flops
from torchcls.config import IMAGENET_DEFAULTS, TrainConfig, load_recipe
from torchcls.data.datasets import is_folder_dataset
from torchcls.errors import UserError
from torchcls.hashing import sha256_file
from torchcls.inference import InferenceInfo, load_for_inference
from torchcls.models import create_model

FORMATS = ("text", "json", "markdown")
RESULT_KEYS = ("epochs", "final", "best", "final_test", "wall_time_s", "train_images_per_s", "hardware")


def count_gflops(info: InferenceInfo, model: nn.Module) -> float | None:
    """Forward GFLOPs of one image at the checkpoint's input size: on a meta-device copy of the
    model (shapes only), or on the loaded model itself when it cannot run on meta tensors."""
    state, size = info.state, info.input_size
    try:
        with torch.device("meta"):
            meta = create_model(info.arch, num_classes=info.num_classes, in_channels=len(info.mean),
                                **(state.get("model_kwargs") or {}))  # fmt: skip
        _, flops = count_params_and_flops(meta.to("meta"), size, "meta")
    except Exception:  # noqa: BLE001 - a model that needs real data (.item(), ...): run the real one
        try:
            _, flops = count_params_and_flops(model, size, "cpu")
        except Exception:  # noqa: BLE001 - no count is better than no card
            return None
    return round(flops / 1e9, 6)


# ----------------------------------------------------------------------------- the recipe and command


def baseline_config(cfg: dict) -> tuple[dict, str | None]:
    """The values a run of `cfg`'s recipe gets without flags (defaults < recipe < the data set's
    defaults for keys the recipe leaves), and a note when the recipe cannot be read here."""
    base = TrainConfig().to_dict()
    recipe, from_recipe, note = cfg.get("recipe"), {}, None
    if recipe:
        try:
            from_recipe = load_recipe(recipe)
        except UserError as e:
            note = f"recipe {recipe!r} is not readable here ({e}); flags are shown against the defaults"
    base.update(from_recipe)
    if is_folder_dataset(cfg.get("dataset", base["dataset"])):
        base.update({k: v for k, v in IMAGENET_DEFAULTS.items() if k not in from_recipe})
    return base, note


def config_changes(cfg: dict) -> dict:
    """The config keys whose values differ from what the run's recipe (and the defaults) give."""
    base, _ = baseline_config(cfg)
    return {k: v for k, v in cfg.items() if k in base and k != "recipe" and v != base[k]}


def _train_actions() -> dict[str, argparse.Action]:
    p = argparse.ArgumentParser(add_help=False)
    train_cmd.add_train_arguments(p)
    return {a.dest: a for a in p._actions if a.option_strings}


def _flag(action: argparse.Action, value) -> list[str]:
    """The command-line words that set `action`'s key to `value` ([] when no flag can)."""
    longs = [o for o in action.option_strings if o.startswith("--")] or list(action.option_strings)
    opt = "--" + action.dest.replace("_", "-")
    opt = opt if opt in longs else longs[0]
    if value is None:
        return []
    if action.nargs == 0:  # store_true
        return [opt] if value else []
    if isinstance(value, bool):
        if action.nargs == "?" and value:
            return [opt]
        return [opt, "on" if value else "off"]
    if isinstance(value, (list, tuple)):
        return [opt, *(str(v) for v in value)]
    return [opt, str(value)]


def training_command(cfg: dict) -> str | None:
    """`torchcls train ...`: the run's recipe and the flags that differ from it; None without a config."""
    if not cfg:
        return None
    actions, words, changes = _train_actions(), ["torchcls", "train"], config_changes(cfg)
    if cfg.get("recipe"):
        words += ["--recipe", str(cfg["recipe"])]
    else:  # without a recipe, -a or -d must be given (else `torchcls train` runs the main recipe)
        changes = {"arch": cfg.get("arch"), "dataset": cfg.get("dataset"), **changes}
    for key, value in changes.items():
        if key in actions:
            words += _flag(actions[key], value)
    return " ".join(shlex.quote(w) for w in words)


# ----------------------------------------------------------------------------- the card


def read_results(path: Path, state: dict) -> tuple[dict | None, str | None]:
    """The run's results.json beside the checkpoint (when it is this run's: same architecture, data
    set and seed), and a note when there is one that is not used."""
    res_path = path.parent / "results.json"
    if not res_path.is_file():
        return None, None
    try:
        res = json.loads(res_path.read_text())
    except (OSError, ValueError) as e:
        return None, f"{res_path} is unreadable ({e}); its figures are left out"
    if not isinstance(res, dict):
        return None, f"{res_path} is not a results file; left out"
    mine = (state.get("arch"), state.get("dataset"), state.get("seed"))
    if (res.get("arch"), res.get("dataset"), res.get("seed")) != mine:
        return None, f"{res_path} is of another run (arch, data set or seed differ); its figures are left out"
    return {k: res[k] for k in RESULT_KEYS if k in res}, None


def checkpoint_card(path) -> dict:
    """The card of a torchcls checkpoint as a plain dict (json-serialisable); UserError when `path`
    is not one. Keys follow torchvision's Weights.meta where it has one (num_params, categories,
    min_size-like input_size, recipe, metrics)."""
    path = Path(path)
    model, info = load_for_inference(path, "cpu")
    state = info.state
    cfg = state.get("config") or {}
    results, results_note = read_results(path, state)
    _, recipe_note = baseline_config(cfg) if cfg else (None, None)
    ema = state.get("ema")
    pre = info.preprocessing
    select = "val" if is_folder_dataset(info.dataset or "") or cfg.get("val_split") else "test"
    return {
        "checkpoint": str(path),
        "file_size_mb": round(path.stat().st_size / 2**20, 3),
        "sha256": sha256_file(path),
        "arch": info.arch,
        "model_kwargs": dict(state.get("model_kwargs") or {}),
        "num_params": sum(p.numel() for p in model.parameters()),
        "gflops": count_gflops(info, model),
        "num_classes": info.num_classes,
        "categories": list(info.classes),
        "input_size": info.input_size,
        "image_channels": pre.channels,
        "model_channels": info.channels,
        "mean": list(pre.mean),
        "std": list(pre.std),
        "preprocessing": {**pre.to_dict(), "description": pre.describe()},
        "dataset": info.dataset,
        "recipe": cfg.get("recipe"),
        "command": training_command(cfg),
        "config_changes": config_changes(cfg) if cfg else {},
        "seed": state.get("seed"),
        "weights": "exponential moving average" if ema and ema.get("updates") else "model",
        "metrics": {
            "epoch": state.get("epoch"),
            "epochs": cfg.get("epochs"),
            "set": select,
            "acc": state.get("acc"),
            "best_acc": state.get("best_acc"),
        },
        "results": results,
        "hardware": (results or {}).get("hardware"),
        "wall_time_s": (results or {}).get("wall_time_s"),
        "torchcls_version": state.get("torchcls_version"),
        "notes": [n for n in (recipe_note, results_note) if n],
    }


# ----------------------------------------------------------------------------- formatting


def _pct(v) -> str:
    return f"{v:.2f}%" if isinstance(v, (int, float)) else "n/a"


def _hardware(hw: dict | None) -> str | None:
    if not hw:
        return None
    where = hw.get("gpu") or hw.get("cpu") or hw.get("device", "?")
    isa = f" ({hw['cpu_isa']})" if hw.get("cpu_isa") and not hw.get("gpu") else ""
    procs = hw.get("world_size") or 1
    return (f"{hw.get('device', '?')}: {where}{isa}, {hw.get('threads', '?')} thread(s), {procs} process"
            f"{'es' if procs != 1 else ''}, torch {hw.get('torch', '?')}")  # fmt: skip


def _results_line(res: dict | None) -> str | None:
    if not res:
        return None
    final, best = res.get("final") or {}, res.get("best") or {}
    text = (f"final {final.get('set', '?')} top-1 {_pct(final.get('top1'))} top-5 {_pct(final.get('top5'))}, "
            f"best {_pct(best.get('top1'))}")  # fmt: skip
    test = res.get("final_test")
    if test:
        text += f"; test top-1 {_pct(test.get('top1'))} top-5 {_pct(test.get('top5'))} ({test.get('count')} images)"
    return text


def card_rows(card: dict) -> list[tuple[str, str]]:
    """(field, value) lines of the card, for text and markdown."""
    m, size, kw = card["metrics"], card["input_size"], card["model_kwargs"]
    cats = card["categories"]
    gflops = f"{card['gflops']:.4g} (one {size}x{size} image)" if card["gflops"] is not None else "not counted"
    epochs = f" of {m['epochs']}" if m.get("epochs") else ""
    seconds = card.get("wall_time_s")
    ips = (card.get("results") or {}).get("train_images_per_s")
    wall = "not recorded"
    if isinstance(seconds, (int, float)):
        wall = f"{seconds:.0f} s" + (f" ({ips:.0f} training images/s)" if ips else "")
    in_text = f"{card['image_channels']}x{size}x{size} ({'grayscale' if card['image_channels'] == 1 else 'RGB'})"
    if card["model_channels"] != card["image_channels"]:
        in_text += f", repeated to the model's {card['model_channels']} channels"
    rows = [
        ("architecture", card["arch"] + (" " + json.dumps(kw) if kw else "")),
        ("parameters", f"{card['num_params']:,} ({card['num_params'] / 1e6:.2f} M)"),
        ("GFLOPs", gflops),
        ("classes", f"{card['num_classes']}: " + ", ".join(cats[:20]) + (", ..." if len(cats) > 20 else "")),
        ("input", in_text),
        ("preprocessing", card["preprocessing"]["description"]),
        ("mean / std", f"{card['mean']} / {card['std']}"),
        ("data set", str(card["dataset"])),
        ("recipe", str(card["recipe"] or "none (flags only)")),
        ("command", card["command"] or "unknown (no config in the checkpoint)"),
        ("weights", card["weights"]),
        ("epoch", f"{m['epoch']}{epochs} (seed {card['seed']})"),
        ("accuracy", f"{m['set']} top-1 {_pct(m['acc'])} at this epoch, best {_pct(m['best_acc'])}"),
        ("results.json", _results_line(card.get("results")) or "none beside the checkpoint"),
        ("wall time", wall),
        ("hardware", _hardware(card.get("hardware")) or "not recorded"),
        ("torchcls", str(card["torchcls_version"] or "unknown")),
        ("file", f"{card['checkpoint']} ({card['file_size_mb']:.2f} MB, sha256 {card['sha256'][:16]}...)"),
    ]
    return rows + [("note", n) for n in card.get("notes", [])]


def format_card(card: dict, fmt: str = "text") -> str:
    """The card as text (aligned fields), json or a markdown table."""
    if fmt == "json":
        return json.dumps(card, indent=2)
    rows = card_rows(card)
    title = f"{card['arch']} on {card['dataset']}"
    if fmt == "markdown":
        lines = [f"## {title}", "", "| field | value |", "| --- | --- |"]
        lines += ["| " + k + " | " + v.replace("|", "\\|") + " |" for k, v in rows]
        return "\n".join(lines)
    if fmt == "text":
        width = max(len(k) for k, _ in rows)
        return "\n".join([title] + [f"  {k.ljust(width)}  {v}" for k, v in rows])
    raise ValueError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a torchcls checkpoint (checkpoint.pth.tar, model_best.pth.tar)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")


def run(ns: argparse.Namespace) -> int:
    text = format_card(checkpoint_card(ns.checkpoint), ns.format)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # `torchcls card ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
