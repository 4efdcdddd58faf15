"""The CUDA-only paths, on a real GPU: fp16 autocast with the GradScaler, `torchrun` with one process,
--sync-bn and --dist-backend nccl, and NCCL itself (all_reduce, SyncBatchNorm under DDP).

Skipped without a CUDA device; benchmarks/gpu_check.sh runs them on the GPU machine. Each is a tiny
run (one epoch on a subset, a few seconds on a GPU). The data: Fashion-MNIST from the system package
when it is installed, else CIFAR-10 from $TORCHCLS_DATA (the GPU machine may have only the latter).

Under torchrun a single process still gets a process group and DDP (engine/distributed), so the
--sync-bn/nccl run converts BatchNorm to SyncBatchNorm and all-reduces through NCCL. NCCL and
SyncBatchNorm are also checked by the third test through the public torch.distributed API (with one
rank, SyncBatchNorm's forward is PyTorch's batch_norm: a one-GPU machine cannot exercise the
statistics exchange).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests._data import CIFAR_ARCHIVE, DATA, FMNIST, QUIET_RUN
from torchcls.cli import main
from torchcls.commands.eval import evaluate_checkpoint
from torchcls.engine.checkpoint import safe_load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds for one subprocess; each takes a few on a GPU
TEST_IMAGES = 500


def data_args() -> list[str]:
    """A subset of a real data set at hand: Fashion-MNIST (system package) or CIFAR-10 ($TORCHCLS_DATA)."""
    sizes = ["--train-subset", "1024", "--test-subset", str(TEST_IMAGES), "--train-batch", "128", "--test-batch", "250"]
    if FMNIST.is_dir():
        return ["--dataset", "fashion-mnist", *sizes]
    if CIFAR_ARCHIVE.is_file():
        return ["--dataset", "cifar10", "--data-dir", str(DATA.resolve()), *sizes]
    pytest.skip(f"neither Fashion-MNIST ({FMNIST}) nor CIFAR-10 ({CIFAR_ARCHIVE}) is here")


def env() -> dict:
    """The test process's environment, with this tree's src/ first (a copied tree needs no reinstall)."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 1 ARGS` (as `python -m torch.distributed.run`: no
    dependence on the console script's interpreter path)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=TIMEOUT)


def train_losses(run: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_fp16_with_grad_scaler_trains_saves_the_scaler_and_evaluates(tmp_path, capsys):
    run = tmp_path / "fp16"
    args = ["train", "-a", "resnet20", *data_args(), *QUIET_RUN, "--amp", "fp16", "--device", "cuda", "-c", str(run)]
    assert main([*args, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "on cuda;" in out and "amp float16" in out, out
    assert all(math.isfinite(v) for v in train_losses(run))
    res = json.loads((run / "results.json").read_text())
    assert res["hardware"]["device"] == "cuda" and res["hardware"]["gpu"]
    assert res["config"]["amp"] == "fp16" and 0 <= res["final"]["top1"] <= 100
    ck = safe_load(run / "checkpoint.pth.tar")
    scaler = ck["scaler"]  # the GradScaler's state: empty when it is disabled (bf16 or float32)
    assert scaler and 0 < scaler["scale"] < math.inf, scaler
    # the checkpoint alone evaluates, on the GPU, at its run's precision (float16)
    ev = evaluate_checkpoint(run / "model_best.pth.tar", device="cuda", limit=TEST_IMAGES, batch_size=250)
    assert ev["count"] == TEST_IMAGES and ev["amp"] == "float16" and math.isfinite(ev["loss"])
    assert abs(ev["top1"] - ck["best_acc"]) <= 2 * 100 / TEST_IMAGES  # fp16 kernels: within two images
    # and the run resumes from it, the scaler's state restored, to a second epoch
    assert main([*args, "--epochs", "2", "--resume", "auto"]) == 0
    assert "resumed from" in capsys.readouterr().out
    ck2 = safe_load(run / "checkpoint.pth.tar")
    assert ck2["epoch"] == 2 and ck2["scaler"] and 0 < ck2["scaler"]["scale"] < math.inf
    assert len(train_losses(run)) == 2 and all(math.isfinite(v) for v in train_losses(run))


def test_torchrun_one_process_sync_bn_nccl_trains(tmp_path):
    run = tmp_path / "syncbn"
    args = ["-a", "resnet20", *data_args(), "--epochs", "1", *QUIET_RUN, "--log-interval", "1000"]
    p = torchrun(["-m", "torchcls", "train", *args, "--device", "cuda", "--sync-bn", "--dist-backend", "nccl",
                  "-c", str(run)])  # fmt: skip
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    assert "on cuda x 1 process;" in out and out.count("torchcls: done") == 1, out[-4000:]
    res = json.loads((run / "results.json").read_text())
    assert res["hardware"]["device"] == "cuda" and res["hardware"]["world_size"] == 1
    assert res["config"]["sync_bn"] is True and res["config"]["dist_backend"] == "nccl"
    assert 0 <= res["final"]["top1"] <= 100 and all(math.isfinite(v) for v in train_losses(run))
    assert safe_load(run / "checkpoint.pth.tar")["epoch"] == 1


NCCL_SCRIPT = r"""
import json
import os

import torch
import torch.distributed as dist
import torch.nn as nn

from torchcls.models import create_model

local_rank = int(os.environ["LOCAL_RANK"])
device = torch.device("cuda", local_rank)
torch.cuda.set_device(device)
dist.init_process_group(backend="nccl")
rank, world = dist.get_rank(), dist.get_world_size()

t = torch.full((1 << 20,), float(rank + 1), device=device)
dist.all_reduce(t, op=dist.ReduceOp.SUM)
m = torch.tensor([float(rank)], device=device)
dist.all_reduce(m, op=dist.ReduceOp.MAX)
b = torch.arange(8.0, device=device) if rank == 0 else torch.zeros(8, device=device)
dist.broadcast(b, src=0)
dist.barrier()
torch.cuda.synchronize()

torch.manual_seed(0)
model = nn.SyncBatchNorm.convert_sync_batchnorm(create_model("resnet20", num_classes=10)).to(device)
sync_bn = sum(isinstance(mod, nn.SyncBatchNorm) for mod in model.modules())
ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local_rank])
opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
x, y = torch.randn(64, 3, 32, 32, device=device), torch.randint(0, 10, (64,), device=device)
losses = []
for _ in range(3):
    loss = nn.functional.cross_entropy(ddp(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    losses.append(loss.item())
print("RESULT " + json.dumps({
    "backend": dist.get_backend(), "world": world,
    "sum_ok": bool(t.eq(world * (world + 1) / 2).all()), "max": m.item(), "broadcast": b.tolist(),
    "sync_bn": sync_bn, "losses": losses,
    "bn_batches": [int(mod.num_batches_tracked) for mod in model.modules() if isinstance(mod, nn.SyncBatchNorm)][:1],
}))
dist.destroy_process_group()
"""


def test_nccl_all_reduce_and_sync_bn_under_ddp(tmp_path):
    script = tmp_path / "nccl_check.py"
    script.write_text(NCCL_SCRIPT)
    p = torchrun([str(script)])
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    line = [s for s in p.stdout.splitlines() if s.startswith("RESULT ")]
    assert line, out[-4000:]
    r = json.loads(line[-1][len("RESULT ") :])
    assert r["backend"] == "nccl" and r["world"] == 1
    assert r["sum_ok"] and r["max"] == 0.0 and r["broadcast"] == [float(i) for i in range(8)]
    assert r["sync_bn"] > 0, "convert_sync_batchnorm converted no BatchNorm layer"
    assert all(math.isfinite(v) for v in r["losses"]) and r["losses"][-1] < r["losses"][0]
    assert r["bn_batches"] == [3]  # the (synchronised) batch statistics were taken in each step
