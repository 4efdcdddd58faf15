"""`torchcls results`: the original's results table beside what torchcls measured.

    torchcls results                               # the committed summaries, docs/results/*.json
    torchcls results RUN [RUN ...]                 # and these run folders (their results.json)
    torchcls results --format markdown             # terminal (default) | markdown | csv | json
    torchcls results RUN --save docs/results       # write RUN's summary file there

One line per row of the original's table and data set (report/original.py), and one more for each
further measured run of it: our parameter count (exactly, at the data set's class count) beside
the original's, the original's top-1, ours with the recipe and command that made it, wall time,
hardware and date. A cell never measured says so; nothing is estimated.

A summary file is a run's results.json (`engine/train.py` writes it; it holds no weights) with what
the table needs added at the top level: `row`, `recipe`, `command`, `date`, `source`, and
`conditions` (what else ran on the machine: `--save DIR --conditions TEXT`). Figures measured
before runs wrote results.json are summary files that hold only what docs/RESULTS.md states (their
`source` says so). The test-set top-1 a row is judged by is the single-view one (`single_view_top1`,
or `final.top1` when the run used no test-time augmentation).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import torch

from torchcls.config import MODEL_KWARGS, load_recipe
from torchcls.errors import UserError
from torchcls.models import create_model
from torchcls.report.original import ROWS, Row, row_of_recipe

FORMATS = ("terminal", "markdown", "csv", "json")
DEFAULT_SUMMARIES = Path("docs/results")
NOT_MEASURED = "not measured"
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
COLUMNS = (
    ("row", "row"),
    ("dataset", "data set"),
    ("params", "params (ours)"),
    ("original_params", "params (original)"),
    ("original_top1", "original top-1"),
    ("top1", "ours: test top-1"),
    ("reaches", "reaches original"),
    ("recipe", "recipe"),
    ("wall_time", "wall time"),
    ("hardware", "hardware"),
    ("date", "date"),
)
# the markers around the generated table in README.md and docs/RESULTS.md
BEGIN = "<!-- BEGIN torchcls results --format markdown (regenerate: torchcls results --update-docs) -->"
END = "<!-- END torchcls results -->"
DOC_FILES = ("README.md", "docs/RESULTS.md")


# --------------------------------------------------------------------------- reading runs


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object")
    return data


@cache
def _model_signature(arch: str, kwargs: tuple, num_classes: int) -> tuple[str, int]:
    """(class name, parameter count) of a model: two configs that build the same network agree."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = create_model(arch, num_classes=num_classes, **dict(kwargs))
    return type(model).__name__, sum(p.numel() for p in model.parameters())


def _config_signature(config: dict, num_classes: int) -> tuple[str, int]:
    kwargs = tuple(sorted((k, config[k]) for k in MODEL_KWARGS if config.get(k) is not None))
    return _model_signature(config["arch"], kwargs, num_classes)


def _config_params(config: dict, num_classes: int) -> int:
    return _config_signature(config, num_classes)[1]


def _row_signature(row: Row, dataset: str) -> tuple[str, int]:
    """The network of the row's original recipe, at the data set's class count."""
    return _recipe_signature(row.recipe(dataset), NUM_CLASSES[dataset])


def _row_params(row: Row, dataset: str) -> int:
    return _row_signature(row, dataset)[1]


@cache
def _recipe_signature(recipe: str, num_classes: int) -> tuple[str, int]:
    return _config_signature(load_recipe(recipe), num_classes)


def _match_row(config: dict) -> tuple[Row, str] | None:
    """The (row, data set) a run trained: its recipe's row, else the row whose network is the same
    (same model class and parameter count), on the run's data set."""
    dataset = config.get("dataset")
    found = row_of_recipe(config.get("recipe"))
    if found is not None and dataset in found[0].datasets:
        return found[0], dataset
    if dataset not in NUM_CLASSES or "arch" not in config:
        return None
    try:
        signature = _config_signature(config, NUM_CLASSES[dataset])
    except (ValueError, TypeError):
        return None
    for row in ROWS:
        if dataset in row.datasets and _row_signature(row, dataset) == signature:
            return row, dataset
    return None


def _command_of(results: dict) -> str | None:
    argv = results.get("argv")
    if not argv:
        return None
    prog = os.path.basename(str(argv[0]))
    if prog in ("torchcls", "__main__.py"):
        return shlex.join(["torchcls", *map(str, argv[1:])])
    return None


def summary_of_run(path: str | os.PathLike) -> dict:
    """The summary of a run folder (or its results.json, or a summary file): results.json with
    row, recipe, command, date and source added."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path}: no results.json there (a run writes it when it finishes)")
    data = _read_json(file)
    if "row" in data and "dataset" in data:
        return data  # already a summary
    config = data.get("config") or {}
    match = _match_row({**config, "dataset": data.get("dataset", config.get("dataset"))})
    if match is None:
        raise UserError(
            f"{file}: its network ({config.get('arch')}, {data.get('dataset')}) is none of the original table's rows"
        )
    row, dataset = match
    finished = data.get("finished")
    if not finished:  # runs before results.json recorded it: the file's own time
        finished = datetime.datetime.fromtimestamp(file.stat().st_mtime, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return {
        "row": row.key,
        "dataset": dataset,
        "recipe": config.get("recipe"),
        "command": _command_of(data),
        "date": finished[:10],
        "source": "results.json",
        **{k: v for k, v in data.items() if k not in ("row",)},
    }


def load_summaries(folder: Path | None, runs: list[str]) -> list[dict]:
    out = []
    if folder is not None:
        for f in sorted(folder.glob("*.json")):
            out.append(summary_of_run(f))
    out += [summary_of_run(r) for r in runs]
    return out


def save_summary(summary: dict, folder: Path) -> Path:
    """Write `summary` as folder/<recipe>-<date>[-seed S].json (a run without a recipe:
    <data set>-<row>-flags-...); returns the path."""
    recipe = (summary.get("recipe") or f"{summary['dataset']}-{summary['row']}-flags").replace("/", "-")
    seed = summary.get("seed")
    stem = f"{recipe}-{summary.get('date') or 'undated'}"
    if seed is not None:
        stem += f"-seed{seed}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- one line of the table


def _views(summary: dict) -> str:
    """How the final figure was evaluated: "single view", or the test-time augmentation."""
    final = summary.get("final") or {}
    if final.get("views"):
        return final["views"]
    config = summary.get("config") or {}
    flip, shift = bool(config.get("tta_flip")), int(config.get("tta_shift") or 0)
    if not flip and not shift:
        return "single view"
    n = (2 if flip else 1) * (3 if shift else 1)  # engine/evaluate.py's tta_logits: centre and two shifts
    return "flip TTA" if n == 2 else f"{n}-view TTA"


def single_view_top1(summary: dict) -> float | None:
    if summary.get("single_view_top1") is not None:
        return float(summary["single_view_top1"])
    top1 = (summary.get("final") or {}).get("top1")
    return float(top1) if top1 is not None and _views(summary) == "single view" else None


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    return f"{s // 60} min {s % 60:02d} s"


def _hardware(summary: dict) -> str:
    if summary.get("hardware_label"):
        return summary["hardware_label"]
    hw = summary.get("hardware") or {}
    if hw.get("gpu"):
        return f"{hw['gpu']} (CUDA)"
    cpu = hw.get("cpu") or "CPU model not recorded"
    isa = f", {hw['cpu_isa']}" if hw.get("cpu_isa") else ""
    cores = f", {hw['cpu_count']} CPUs" if hw.get("cpu_count") else ""
    if hw.get("threads") and hw.get("cpu_count") and hw["threads"] != hw["cpu_count"]:
        cores += f" ({hw['threads']} thread{'s' if hw['threads'] > 1 else ''})"
    return f"{cpu}{isa}{cores}"


def _original_cell(row: Row, dataset: str) -> str:
    if dataset == "imagenet":
        return f"{row.original_accuracy(dataset):.2f}% (error {row.original[dataset]}% / top-5 {row.imagenet_top5}%)"
    return f"{row.original[dataset]}%"


def _line(row: Row, dataset: str, summary: dict | None) -> dict[str, Any]:
    params = _row_params(row, dataset)
    line: dict[str, Any] = {
        "row": row.label,
        "row_key": row.key,
        "dataset": DATASET_NAMES[dataset],
        "params": f"{params:,}",
        "params_exact": params,
        "original_params": row.params if row.params and dataset != "cifar100" else "not given",
        "original_top1": _original_cell(row, dataset),
        "original_top1_value": row.original_accuracy(dataset),
    }
    if summary is None:
        return {
            **line,
            "top1": NOT_MEASURED,
            "top1_value": None,
            "reaches": NOT_MEASURED,
            "recipe": row.recipe(dataset),
            "command": None,
            "wall_time": NOT_MEASURED,
            "wall_time_s": None,
            "hardware": NOT_MEASURED,
            "date": NOT_MEASURED,
            "source": None,
            "conditions": None,
        }
    if summary.get("config", {}).get("arch") is not None and "params_exact" not in summary:
        try:  # the run's own network (a faster recipe may build the same row another way)
            params = _config_params(summary["config"], NUM_CLASSES[dataset])
            line.update(params=f"{params:,}", params_exact=params)
        except (KeyError, ValueError, TypeError):
            pass
    single = single_view_top1(summary)
    final = (summary.get("final") or {}).get("top1")
    views = _views(summary)
    if single is not None and views != "single view" and final is not None:
        cell = f"{single:.2f}% ({views}: {float(final):.2f}%)"
    elif single is not None:
        cell = f"{single:.2f}%"
    elif final is not None:
        cell = f"{float(final):.2f}% ({views}; single view not recorded)"
    else:
        cell = "not recorded"
    if summary.get("top1_note"):
        cell += f"; {summary['top1_note']}"
    partial, changed = _departures(summary)
    if partial or changed:
        cell += f" ({'; '.join([*partial, *changed])})"
    reaches = "not known" if single is None else ("yes" if single >= row.original_accuracy(dataset) else "no")
    if partial:
        reaches = "not comparable"
    date = summary.get("date") or summary.get("date_note") or "not recorded"
    if summary.get("date") and summary.get("date_note"):
        date = f"{summary['date']} ({summary['date_note']})"
    return {
        **line,
        "top1": cell,
        "top1_value": single,
        "reaches": reaches,
        "recipe": summary.get("recipe") or "flags (see command)",
        "command": summary.get("command"),
        "wall_time": _wall(summary.get("wall_time_s")),
        "wall_time_s": summary.get("wall_time_s"),
        "hardware": _hardware(summary),
        "date": date,
        "source": summary.get("source"),
        "conditions": summary.get("conditions"),
    }


def _departures(summary: dict) -> tuple[list[str], list[str]]:
    """What the run changed of its recipe that the table must say: (data left out, which makes the
    figure incomparable with the original's; other changes: a different number of epochs)."""
    config = summary.get("config") or {}
    partial = []
    if config.get("train_subset"):
        partial.append(f"trained on {config['train_subset']:,} images")
    if config.get("val_split"):
        partial.append(f"{config['val_split']:,} training images held out")
    if config.get("test_subset"):
        partial.append(f"tested on {config['test_subset']:,} images")
    changed = []
    try:
        planned = load_recipe(summary["recipe"]).get("epochs") if summary.get("recipe") else None
    except UserError:  # a recipe file that is not at hand
        planned = None
    epochs = summary.get("epochs", config.get("epochs"))
    if planned is not None and epochs is not None and epochs != planned:
        changed.append(f"{epochs} epoch{'s' if epochs != 1 else ''}, not the recipe's {planned}")
    return partial, changed


def _day(summary: dict) -> str:
    """The run's day, or the day its figure was committed when the run's day was not recorded."""
    m = re.search(r"\d{4}-\d{2}-\d{2}", f"{summary.get('date') or ''} {summary.get('date_note') or ''}")
    return m.group(0) if m else ""


def table(summaries: list[dict]) -> list[dict[str, Any]]:
    """Every row and data set of the original's table in its order; a measured one gets a line per
    run (in its recipes' order, then by date), an unmeasured one a line saying so."""
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for s in summaries:
        by_cell.setdefault((s["row"], s["dataset"]), []).append(s)
    lines = []
    for row in ROWS:
        for dataset in row.datasets:
            runs = by_cell.pop((row.key, dataset), [])
            order = {name: i for i, name in enumerate(row.recipes(dataset))}
            runs.sort(key=lambda s: (order.get(s.get("recipe"), len(order)), _day(s), s.get("seed") or 0))
            lines += [_line(row, dataset, s) for s in runs] or [_line(row, dataset, None)]
    if by_cell:
        bad = ", ".join(f"{r} ({d})" for r, d in by_cell)
        raise UserError(f"summaries name rows or data sets the original's table lacks: {bad}")
    return lines


# --------------------------------------------------------------------------- rendering


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def render(lines: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(lines, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        keys = list(lines[0]) if lines else [k for k, _ in COLUMNS]
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(lines)
        return buf.getvalue()
    if fmt == "markdown":
        out = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
        notes = []
        for line in lines:
            cells = [_md(line[k]) for k, _ in COLUMNS]
            if line["command"]:
                notes.append(f"`{line['command']}`" + (f"; {line['conditions']}" if line["conditions"] else ""))
                cells[5] += f" [{len(notes)}]"
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(
            "Parameters: ours counted exactly at the data set's class count; the original's as its table prints "
            "them (CIFAR-10 only). Top-1 is single-view test accuracy unless the cell says otherwise; a row is "
            "reproduced when it reaches the original's figure. Wall time: the run's (results.json's `wall_time_s`: "
            "data loading, training, evaluation, checkpoints), or the whole command's where the summary comes from "
            "docs/RESULTS.md. Commands of the measured cells:"
        )
        out.append("")
        out += [f"{i}. {note}" for i, note in enumerate(notes, 1)]
        return "\n".join(out) + "\n"
    if fmt == "terminal":
        heads = [h for _, h in COLUMNS]
        rows = [[str(line[k]) for k, _ in COLUMNS] for line in lines]
        widths = [max(len(r[i]) for r in [heads, *rows]) for i in range(len(heads))]
        fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [fmt_row.format(*heads), fmt_row.format(*("-" * w for w in widths))]
        out += [fmt_row.format(*r).rstrip() for r in rows]
        return "\n".join(out) + "\n"
    raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def replace_section(text: str, markdown: str, where: str) -> str:
    """`text` with the part between the BEGIN and END markers replaced by `markdown`."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise UserError(f"{where} must hold the markers {BEGIN!r} and {END!r} once each, in that order")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown}{END}{tail}"


def section(text: str) -> str:
    """The part of `text` between the markers (what `replace_section` wrote)."""
    return text.split(BEGIN, 1)[1].split(END, 1)[0].removeprefix("\n")


# --------------------------------------------------------------------------- the command


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="*", metavar="RUN", help="run folders (or their results.json) to add to the table")
    p.add_argument(
        "--summaries",
        metavar="DIR",
        default=None,
        help=f"folder of summary files (default {DEFAULT_SUMMARIES}/ when it exists; 'none': only the RUNs)",
    )
    p.add_argument("--format", choices=FORMATS, default="terminal")
    p.add_argument("--save", metavar="DIR", help="write a summary file of each RUN into DIR (e.g. docs/results)")
    p.add_argument(
        "--conditions",
        metavar="TEXT",
        help="with --save: what else ran on the machine during the RUNs (kept in their summary files)",
    )
    p.add_argument(
        "--update-docs",
        action="store_true",
        help=f"rewrite the generated table in {' and '.join(DOC_FILES)} (run from the repository root)",
    )


def run(ns: argparse.Namespace) -> int:
    if ns.summaries is None:
        folder = DEFAULT_SUMMARIES if DEFAULT_SUMMARIES.is_dir() else None
    elif ns.summaries.lower() == "none":
        folder = None
    else:
        folder = Path(ns.summaries)
        if not folder.is_dir():
            raise UserError(f"--summaries {folder}: no such folder")
    if ns.save:
        for r in ns.runs:
            summary = summary_of_run(r)
            if ns.conditions:
                summary["conditions"] = ns.conditions
            print(f"torchcls: wrote {save_summary(summary, Path(ns.save))}")
        if Path(ns.save).resolve() == (folder.resolve() if folder else None):
            ns.runs = []  # now part of the folder: not twice
    lines = table(load_summaries(folder, ns.runs))
    if ns.update_docs:
        markdown = render(lines, "markdown")
        for name in DOC_FILES:
            path = Path(name)
            if not path.is_file():
                raise UserError(f"{name} not found: run --update-docs from the repository root")
            path.write_text(replace_section(path.read_text(encoding="utf-8"), markdown, name), encoding="utf-8")
            print(f"torchcls: updated {name}")
        return 0
    print(render(lines, ns.format), end="")
    return 0
