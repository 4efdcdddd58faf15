"""Weight averaging (--ema-decay): the average's arithmetic, its use in evaluation, exact resume."""

import json
import shlex

import pytest
import torch
import torch.nn as nn

from tests._data import needs_fmnist
from tests.test_train import TINY, assert_same_weights, cfg_of, stop_after_first_epoch_then_resume
from torchcls.cli import main
from torchcls.data.build import build_data
from torchcls.engine.checkpoint import safe_load
from torchcls.engine.ema import ModelEma
from torchcls.engine.evaluate import evaluate
from torchcls.engine.setup import resolve_amp
from torchcls.engine.train import train
from torchcls.models import create_model


def test_ema_arithmetic_warmup_and_interval():
    net = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    ema = ModelEma(net, decay=0.5, every=2)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net.train()(torch.randn(4, 2))  # BatchNorm: running statistics move, num_batches_tracked 0 -> 1
    ema.step(net)  # step 1 of every 2: no update
    assert torch.equal(ema.module[0].weight, w0)
    ema.step(net)  # first update: d = min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.module[0].weight, 0.1 * w0 + 0.9 * (w0 + 1))
    assert int(ema.module[1].num_batches_tracked) == int(net[1].num_batches_tracked) == 1  # integers copied
    assert torch.allclose(ema.module[1].running_mean, 0.9 * net[1].running_mean)  # from 0: floats averaged
    assert not any(p.requires_grad for p in ema.module.parameters())
    state = ema.state_dict()
    other = ModelEma(net, decay=0.5, every=2)
    other.load_state_dict(state)
    assert other.steps == 2 and other.updates == 1
    assert torch.equal(other.module[0].weight, ema.module[0].weight)
    with pytest.raises(ValueError):
        ModelEma(net, decay=1.0)


@needs_fmnist
def test_ema_is_saved_evaluated_and_resumed_exactly(tmp_path):
    cmd = TINY.replace("--epochs 2", "--epochs 3") + " --ema-decay 0.9 --ema-every 2"
    train(cfg_of(cmd, tmp_path / "full"), log=lambda *a: None)
    full = safe_load(tmp_path / "full/checkpoint.pth.tar")
    assert full["ema"]["updates"] > 0
    assert any(not torch.equal(full["ema"]["state_dict"][k], full["state_dict"][k]) for k in full["state_dict"])

    run = tmp_path / "stopped"
    stop_after_first_epoch_then_resume(cmd, run)
    resumed = safe_load(run / "checkpoint.pth.tar")
    assert_same_weights(full["state_dict"], resumed["state_dict"])
    assert_same_weights(full["ema"]["state_dict"], resumed["ema"]["state_dict"])
    assert (tmp_path / "full/log.txt").read_text() == (run / "log.txt").read_text()

    # what was logged is the average's accuracy: evaluating the saved average the same way agrees

    cfg = cfg_of(cmd, tmp_path / "unused")
    cpu = torch.device("cpu")
    data = build_data(cfg, 3, 0, 1, cpu)
    last = json.loads((tmp_path / "full/metrics.jsonl").read_text().splitlines()[-1])
    net = create_model(cfg.arch, num_classes=10, **cfg.model_kwargs())
    net.load_state_dict(full["ema"]["state_dict"])
    res = evaluate(
        net.to(memory_format=torch.channels_last),
        data.select,
        mean=data.mean,
        std=data.std,
        device=cpu,
        amp_dtype=resolve_amp(cfg.amp, cpu),
        channels_last=True,
    )
    assert abs(res["top1"] - last["valid_acc"]) < 0.2  # the same images right (one image is 0.39%)


@needs_fmnist
def test_resuming_an_ema_run_without_ema_is_refused(tmp_path, capsys):

    run = tmp_path / "run"
    cmd = TINY.replace("--epochs 2", "--epochs 1") + " --ema-decay 0.9"
    train(cfg_of(cmd, run), log=lambda *a: None)
    more = TINY.replace("--epochs 2", "--epochs 2")
    assert main(["train", *shlex.split(more), "-c", str(run), "--resume", str(run / "checkpoint.pth.tar")]) == 2
    assert "--ema-decay 0.9" in capsys.readouterr().err
