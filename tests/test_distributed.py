"""Real `torchrun --nproc_per_node=2` runs (gloo, CPU) against one process over the same global batch.

Each run is tiny (a few steps) but goes through the whole path: torchrun's environment,
init_distributed, DDP, sharded loaders, all-reduced metrics, rank-0-only outputs, restarts.
tests/launch.py --dump-weights makes every rank save its final weights and metrics to compare them.

BatchNorm: with per-process batches each rank normalises with its own half of the batch, so a
2x16 run is not a 1x32 run for a network with BatchNorm, and SyncBatchNorm works only on GPUs.
The equality with one process is therefore checked on AlexNet (CIFAR variant: no BatchNorm, no
dropout); for a BatchNorm network the ranks must still hold identical weights.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._data import QUIET_RUN, needs_fmnist

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAUNCH = ROOT / "tests" / "launch.py"

COMMON = ["--epochs", "1", *QUIET_RUN, "--log-interval", "1000"]
FMNIST_ARGS = "--dataset fashion-mnist --train-subset 256 --test-subset 200 --train-batch 64 --test-batch 100".split()


def run(args, tmp: Path, name: str, nproc: int, faults=(), torchrun_args=(), torchrun: bool = False):
    """Train with `nproc` torchrun processes (1: plain python unless `torchrun`) through
    tests/launch.py, which runs the real CLI with `faults` injected; return (output, run dir, dump)."""
    run_dir, dump = tmp / name, tmp / f"{name}-dump"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = (
        [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={nproc}", *torchrun_args]
        if nproc > 1 or torchrun
        else [sys.executable]
    )
    cmd = [
        *launcher,
        str(LAUNCH),
        "--dump-weights",
        str(dump),
        *faults,
        "--",
        "train",
        *COMMON,
        *args,
        "-c",
        str(run_dir),
    ]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return out, run_dir, dump


def load(dump: Path, rank: int):
    return torch.load(dump / f"rank{rank}.pt", weights_only=True), json.loads((dump / f"rank{rank}.json").read_text())


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def check_two_ranks_equal_one_process(two, one, out2, run2):
    (w0, m0), (w1, m1), (ws, ms) = load(two, 0), load(two, 1), load(one, 0)
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "the two ranks hold different weights"
    assert m0 == m1, "the ranks report different accuracies"
    # the same images and the averaged gradient; only the float32 summation order differs (two
    # batches of 16 all-reduced against one of 32): under 1e-5 on the Zen 4, 2.5e-5 on an AMX Xeon;
    # a summed instead of averaged gradient (as one process at twice the lr) is 3.4e-3 away
    assert max_diff(w0, ws) < 1e-4, f"2 processes differ from 1 by {max_diff(w0, ws)}"
    assert abs(m0["final"]["top1"] - ms["final"]["top1"]) < 1e-9
    # one set of outputs, written by rank 0 alone
    assert out2.count("torchcls: training ") == 1 and out2.count("torchcls: done") == 1
    assert len((run2 / "log.txt").read_text().splitlines()) == 2
    assert len((run2 / "metrics.jsonl").read_text().splitlines()) == 1
    assert not list(run2.glob(".*.tmp"))


def test_folder_two_processes_equal_one(woof, tmp_path):
    # crops and flips are drawn per sample from (seed, epoch, index), so they are the same in both runs
    args = [
        "-a",
        "alexnet",
        "--dataset",
        "imagenet",
        "--data",
        str(woof),
        "--train-subset",
        "128",
        "--train-batch",
        "32",
        "--test-batch",
        "50",
        "--train-size",
        "32",
        "--val-size",
        "32",
        "--val-resize",
        "36",
        "-j",
        "1",
    ]
    out2, run2, dump2 = run(args, tmp_path, "two", 2)
    _, _, dump1 = run(args, tmp_path, "one", 1)
    assert "batch 32 global (16 per process)" in out2 and "x 2 processes" in out2
    check_two_ranks_equal_one_process(dump2, dump1, out2, run2)
    assert load(dump2, 0)[1]["final"]["top1"] >= 0 and "top-1" in out2


@needs_fmnist
def test_in_memory_two_processes_equal_one(tmp_path):
    # the in-memory path's crop and flip run on the device from a per-rank generator: off here
    args = ["-a", "alexnet", *FMNIST_ARGS, "--crop-padding", "0", "--flip", "off"]
    out2, run2, dump2 = run(args, tmp_path, "two", 2)
    _, _, dump1 = run(args, tmp_path, "one", 1)
    assert "batch 64 global (32 per process)" in out2
    check_two_ranks_equal_one_process(dump2, dump1, out2, run2)


@needs_fmnist
@needs_fmnist
def test_torchrun_with_one_process_runs_the_distributed_path(tmp_path):
    """Under torchrun a single process still gets a process group and DDP (as torchvision's
    references do: --sync-bn and --dist-backend then act); the weights equal a plain run's."""
    args = ["-a", "resnet20", *FMNIST_ARGS]
    out, _, dump = run(args, tmp_path, "tr1", 1, torchrun=True)
    assert " x 1 process;" in out
    _, _, plain = run(args, tmp_path, "plain", 1)
    assert max_diff(load(dump, 0)[0], load(plain, 0)[0]) < 1e-5


def test_batchnorm_ranks_agree_and_sync_bn_on_cpu_is_refused(tmp_path):
    args = ["-a", "resnet20", *FMNIST_ARGS]
    out, _, dump = run(args, tmp_path, "bn", 2)
    (w0, m0), (w1, m1) = load(dump, 0), load(dump, 1)
    assert all(torch.equal(w0[k], w1[k]) for k in w0) and m0 == m1  # BN buffers: broadcast from rank 0
    with pytest.raises(AssertionError, match="--sync-bn needs CUDA"):
        run([*args, "--sync-bn"], tmp_path, "syncbn", 2)


@needs_fmnist
def test_restarted_job_resumes_from_its_last_checkpoint(tmp_path):
    """The last rank dies after epoch 1; torchrun restarts both, and --resume auto carries on at epoch 2."""
    args = ["-a", "alexnet", *FMNIST_ARGS, "--resume", "auto", "--epochs", "2"]
    out, run_dir, dump = run(
        args, tmp_path, "ft", 2, faults=["--crash-after-epoch", "1"], torchrun_args=["--max-restarts=1"]
    )
    assert "rank 1 exits on purpose" in out
    assert "no checkpoint in" in out and "resumed from" in out and "at epoch 1" in out
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert len((run_dir / "log.txt").read_text().splitlines()) == 3
    w0, _ = load(dump, 0)
    w1, _ = load(dump, 1)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
