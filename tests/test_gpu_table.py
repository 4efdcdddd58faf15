"""benchmarks/gpu_table.sh, in what a CPU can run of it: its plan (--list: every CIFAR-10 row once,
each a valid recipe and flags), its commands (--dry-run), and its one-line refusal without a GPU."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchcls.cli import build_parser
from torchcls.commands.train import config_from_args
from torchcls.report.original import ROWS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_table.sh"


def script(*args, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PY": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def test_executable_and_valid_syntax():
    assert os.access(SCRIPT, os.X_OK)
    p = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_plan_has_every_cifar10_row_once_each_a_valid_run():
    p = script("--list")
    assert p.returncode == 0, p.stderr
    plan = [line.split("\t") for line in p.stdout.splitlines()]
    assert sorted(row for row, *_ in plan) == sorted(r.key for r in ROWS if "cifar10" in r.datasets)
    for row, recipe, flags, epochs in plan:
        cfg = config_from_args(build_parser().parse_args(["train", "--recipe", recipe, *shlex.split(flags)]))
        assert (cfg.dataset, cfg.epochs) == ("cifar10", int(epochs)), row
        assert cfg.arch == config_from_args(build_parser().parse_args(["train", "--recipe", recipe])).arch
    measured = [row for row, *_ in plan][-2:]
    assert measured == ["resnet20", "resnet56"]  # the rows already measured on CPUs come last


def test_dry_run_prints_the_commands_and_runs_nothing(tmp_path):
    p = script("--dry-run", OUT=str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.count(" -m torchcls train --recipe ") == p.stdout.count(" -m torchcls bench --recipe ") == 17
    assert f"-c {tmp_path / 'out'}/runs/alexnet" in p.stdout and "--save" in p.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the script would run the table")
def test_without_a_gpu_one_line_and_exit_2(tmp_path):
    p = script(OUT=str(tmp_path / "out"))
    assert p.returncode == 2
    assert p.stdout.startswith("gpu_table: no CUDA device (") and len(p.stdout.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unknown_argument(tmp_path):
    p = script("--bogus")
    assert p.returncode == 2 and "unknown argument" in p.stderr


@pytest.mark.slow
def test_quick_cpu_mode_runs_the_first_row_and_writes_its_summary(tmp_path):
    out = tmp_path / "out"
    p = script(OUT=str(out), GPU_TABLE_QUICK="1")
    assert p.returncode == 0, p.stdout + p.stderr
    status = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()]
    assert status[0][:2] == ["row", "recipe"] and [r[0] for r in status[1:]] == ["alexnet"]
    assert status[1][6] == "ok" and int(status[1][4]) > 0  # measured images/s, then trained
    (summary,) = (out / "summaries").glob("*.json")
    assert summary.name.startswith("cifar10-alexnet-30ep-")
    assert "| AlexNet | CIFAR-10 |" in (out / "table.md").read_text()
    assert not list(out.rglob("*.pth.tar"))
