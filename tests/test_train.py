"""The training run on real data: its outputs, exact resume, determinism, eval, learning."""

import json
import shlex
from pathlib import Path

import pytest
import torch

from tests._data import needs_fmnist
from torchcls.cli import build_parser, main
from torchcls.commands.eval import evaluate_checkpoint
from torchcls.commands.train import config_from_args
from torchcls.engine.checkpoint import safe_load
from torchcls.engine.train import train
from torchcls.errors import UserError

# a tiny, fast run: a small net (the CIFAR ResNet at its smallest depth, 8) on a subset, two epochs
TINY = (
    "-a resnet --depth 8 --dataset fashion-mnist --train-subset 512 --test-subset 256 --train-batch 64 "
    "--test-batch 256 --epochs 2 --lr 0.05 --lr-schedule cosine --manualSeed 3 --plot off "
    "--tensorboard off"
)


def cfg_of(cmd: str, run_dir: Path):
    return config_from_args(build_parser().parse_args(["train", *shlex.split(cmd), "-c", str(run_dir)]))


def weights(path: Path) -> dict:
    return safe_load(path)["state_dict"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@needs_fmnist
def test_run_writes_every_output(tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", *shlex.split(TINY.replace("--plot off --tensorboard off", "")), "-c", str(run)])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"outputs in {run}" in out
    lines = (run / "log.txt").read_text().splitlines()
    assert lines[0].split("\t") == ["Learning Rate", "Train Loss", "Valid Loss", "Train Acc.", "Valid Acc."]
    assert len(lines) == 3 and all(len(line.split("\t")) == 5 for line in lines[1:])
    assert all(len(v.split(".")[1]) == 6 for v in lines[1].split("\t"))  # the original's %.6f
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"valid_top5", "train_time", "images_per_s"} <= rows[0].keys()
    assert (run / "log.png").stat().st_size > 1000
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "arch: resnet\n" in (run / "config.yaml").read_text() and "depth: 8\n" in (run / "config.yaml").read_text()
    res = json.loads((run / "results.json").read_text())
    assert res["epochs"] == 2 and res["hardware"]["torch"] == torch.__version__
    assert res["final"]["top1"] == pytest.approx(rows[-1]["valid_acc"])
    ck = safe_load(run / "checkpoint.pth.tar")  # weights_only=True
    assert ck["epoch"] == 2 and ck["arch"] == "resnet" and ck["num_classes"] == 10
    assert len(ck["classes"]) == 10 and len(ck["mean"]) == 1 and ck["input_size"] == 32
    assert {"optimizer", "scheduler", "scaler", "rng", "best_acc", "config"} <= ck.keys()
    assert (run / "model_best.pth.tar").is_file()


@needs_fmnist
def test_eval_every_skips_evaluations_not_training(tmp_path, capsys):
    """--eval-every 2 over 3 epochs: epochs 2 and 3 are evaluated, epoch 1 only trains (empty
    validation figures in its rows, nan in log.txt), and the weights are those of a run that
    evaluates every epoch: evaluation does not touch training."""
    three = TINY.replace("--epochs 2", "--epochs 3")
    train(cfg_of(three, tmp_path / "every"), log=lambda *a: None)
    rc = main(
        ["train", *shlex.split(three.replace("--plot off", "")), "--eval-every", "2", "-c", str(tmp_path / "two")]
    )
    assert rc == 0 and "not evaluated (--eval-every 2)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    every = [json.loads(line) for line in (tmp_path / "every/metrics.jsonl").read_text().splitlines()]
    assert [r["valid_acc"] is None for r in rows] == [True, False, False]
    assert rows[0]["best_acc"] is None and rows[0]["valid_set"] is None and rows[1]["best_acc"] is not None
    assert [r["valid_acc"] for r in rows[1:]] == [r["valid_acc"] for r in every[1:]]
    assert (tmp_path / "two/log.txt").read_text().splitlines()[1].split("\t")[2] == "nan"
    assert (tmp_path / "two/log.png").stat().st_size > 1000
    assert_same_weights(weights(tmp_path / "every/checkpoint.pth.tar"), weights(tmp_path / "two/checkpoint.pth.tar"))
    assert safe_load(tmp_path / "two/model_best.pth.tar")["epoch"] in (2, 3)
    with pytest.raises(UserError, match="--eval-every must be at least 1"):
        cfg_of(TINY + " --eval-every 0", tmp_path / "bad")


@needs_fmnist
def test_same_seed_same_weights(tmp_path):
    train(cfg_of(TINY, tmp_path / "a"), log=lambda *a: None)
    train(cfg_of(TINY, tmp_path / "b"), log=lambda *a: None)
    assert_same_weights(weights(tmp_path / "a/checkpoint.pth.tar"), weights(tmp_path / "b/checkpoint.pth.tar"))
    train(cfg_of(TINY.replace("--manualSeed 3", "--manualSeed 4"), tmp_path / "c"), log=lambda *a: None)
    wa, wc = weights(tmp_path / "a/checkpoint.pth.tar"), weights(tmp_path / "c/checkpoint.pth.tar")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


class Crash(Exception):
    pass


def stop_after_first_epoch_then_resume(cmd: str, run: Path) -> None:
    """Train `cmd` into `run`, crash it after epoch 1 (its checkpoint on disk), then resume it."""

    def crash_after_first(epoch, row):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        train(cfg_of(cmd, run), log=lambda *a: None, on_epoch_end=crash_after_first)
    assert safe_load(run / "checkpoint.pth.tar")["epoch"] == 1
    train(cfg_of(cmd + f" --resume {run / 'checkpoint.pth.tar'}", run), log=lambda *a: None)


@needs_fmnist
@pytest.mark.parametrize(
    "schedule",
    [
        "step --schedule 1 2 --gamma 0.1",
        "onecycle --warmup-epochs 1",
        "flatcos --anneal-start 0.5 --optimizer radam --lookahead-k 3 --lr 3e-3 --wd 0.01 --mixup 0.4",  # Ranger, mix
    ],
)
def test_resume_equals_uninterrupted(tmp_path, schedule):
    cmd = TINY.replace("--epochs 2", "--epochs 3").replace("cosine", schedule) + " --drop 0.2"
    cmd = cmd.replace("-a resnet --depth 8", "-a wrn --depth 10 --widen-factor 1")  # dropout: the RNG must resume too
    train(cfg_of(cmd, tmp_path / "full"), log=lambda *a: None)
    run = tmp_path / "stopped"
    stop_after_first_epoch_then_resume(cmd, run)
    assert_same_weights(weights(tmp_path / "full/checkpoint.pth.tar"), weights(run / "checkpoint.pth.tar"))
    full = (tmp_path / "full/log.txt").read_text().splitlines()
    resumed = (run / "log.txt").read_text().splitlines()
    assert resumed == full  # log.txt appended on resume: the same rows, learning rates included


@needs_fmnist
def test_eval_command_uses_the_checkpoint_alone(tmp_path, capsys):
    run = tmp_path / "run"
    train(cfg_of(TINY, run), log=lambda *a: None)
    capsys.readouterr()
    rc = main(["eval", str(run / "model_best.pth.tar"), "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["count"] == 10_000 and res["arch"] == "resnet" and 0 <= res["top5"] <= 100
    assert res["top5"] >= res["top1"]
    rc = main(["eval", str(run / "model_best.pth.tar"), "--tta-flip", "--limit", "1000"])
    assert rc == 0 and "top-1" in capsys.readouterr().out
    # on the run's own 256 test images, at the run's own precision (its --amp), eval gives the logged figure
    assert main(["eval", str(run / "model_best.pth.tar"), "--json", "--limit", "256"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["count"] == 256 and res["top1"] == safe_load(run / "model_best.pth.tar")["best_acc"]
    if not torch.cuda.is_available():  # as train does: --device cuda without a GPU is one line, exit 2
        assert main(["eval", str(run / "model_best.pth.tar"), "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err


@needs_fmnist
def test_train_crop_trains_on_windows_and_evaluates_the_centre(tmp_path, capsys):
    run = tmp_path / "crop"
    train(cfg_of(TINY + " --train-crop 28 --crop-padding 0", run), log=lambda *a: None)
    ck = safe_load(run / "checkpoint.pth.tar")
    assert ck["input_size"] == 28
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["train_size"] == 28
    # `torchcls eval` takes the crop from the checkpoint: on the same 256 test images it agrees

    res = evaluate_checkpoint(run / "checkpoint.pth.tar", device="cpu", split="test")
    assert res["count"] == 10_000
    assert 0 <= res["top1"] <= 100


@needs_fmnist
def test_resume_without_a_seed_keeps_the_runs_own_seed(tmp_path):
    cmd = TINY.replace("--manualSeed 3", "")
    run = tmp_path / "noseed"

    def crash_after_first(epoch, row):
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        train(cfg_of(cmd, run), log=lambda *a: None, on_epoch_end=crash_after_first)
    seed = safe_load(run / "checkpoint.pth.tar")["seed"]
    res = train(cfg_of(cmd + " --resume auto", run), log=lambda *a: None)
    assert res["seed"] == seed
