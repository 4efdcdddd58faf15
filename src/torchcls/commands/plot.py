"""`torchcls plot RUN_DIR`: redraw log.png of a run folder from its metrics.jsonl."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchcls.errors import UserError
from torchcls.report.plot import plot_run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", default=None)


def run(ns: argparse.Namespace) -> int:
    out = plot_run(Path(ns.run_dir), Path(ns.output) if ns.output else None)
    if out is None:
        raise UserError(f"{ns.run_dir} has no metrics.jsonl to plot; is it a torchcls run folder?")
    print(out)
    return 0
