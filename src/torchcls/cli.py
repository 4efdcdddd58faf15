"""Entry point: torchcls train | eval | predict | export | card | models | bench | prepare | plot | recipes | results

This module only parses and dispatches; each command lives in torchcls/commands/.
"""

from __future__ import annotations

import argparse
import sys

from torchcls import __version__
from torchcls.commands import bench, card, export, models, plot, predict, prepare, recipes, results, train
from torchcls.commands import eval as eval_cmd
from torchcls.errors import Interrupted, UserError

COMMANDS = {
    "train": (train, "train a model (no arguments: the main recipe, SpeedNet-mini on Fashion-MNIST)"),
    "eval": (eval_cmd, "evaluate a checkpoint on a data set's test split"),
    "predict": (predict, "top-k classes of image files, folders or globs with a checkpoint's own preprocessing"),
    "export": (export, "export a checkpoint to ONNX, TorchScript or torch.export (.pt2), checked against PyTorch"),
    "card": (card, "what a checkpoint is: architecture, size, classes, preprocessing, recipe, metrics"),
    "models": (models, "list every registered model with parameters and GFLOPs"),
    "bench": (bench, "training throughput and peak memory; --vs-reference: against the original's loop"),
    "prepare": (prepare, "decode an ImageNet-style folder once into the image store that training reads"),
    "plot": (plot, "draw log.png of a run folder"),
    "recipes": (recipes, "list the built-in recipes"),
    "results": (results, "the original's results table beside our measured runs (docs/results/, run folders)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchcls", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"torchcls {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(cmd)
        cmd.set_defaults(func=module.run)
    return p


def main(argv=None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return ns.func(ns)
    except UserError as e:
        print(f"torchcls: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"torchcls: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("torchcls: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
