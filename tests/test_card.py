"""`torchcls card`: what a checkpoint trained here is, in text, json and markdown, every figure checked."""

import json
import shlex
import shutil

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests._data import QUIET_RUN, needs_fmnist
from torchcls import __version__
from torchcls.cli import build_parser, main
from torchcls.commands.card import checkpoint_card, config_changes, training_command
from torchcls.commands.train import config_from_args
from torchcls.config import build_config
from torchcls.data.fashion_mnist import CLASSES
from torchcls.engine.checkpoint import safe_load
from torchcls.inference import load_checkpoint_model

RUN = "--recipe main --epochs 2 --warmup-epochs 0.5 --train-subset 1000 --test-subset 200 --train-batch 250"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The main recipe (SpeedNet-mini, 1 channel, Fashion-MNIST), shrunk to two short epochs."""
    run = tmp_path_factory.mktemp("card") / "run"
    assert main(["train", *RUN.split(), *QUIET_RUN, "--lr", "0.4", "-c", str(run)]) == 0
    return run


def config_of(command: str) -> dict:
    words = shlex.split(command)
    assert words[:2] == ["torchcls", "train"]
    return config_from_args(build_parser().parse_args(words[1:])).to_dict()


@needs_fmnist
def test_card_fields_are_the_checkpoints(run_dir):
    ckpt = run_dir / "checkpoint.pth.tar"
    card = checkpoint_card(ckpt)
    state = safe_load(ckpt)
    model, _ = load_checkpoint_model(ckpt, torch.device("cpu"), False)
    assert card["arch"] == "speednet_mini" and card["dataset"] == "fashion-mnist"
    assert card["num_params"] == sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 1, 28, 28))
    assert card["gflops"] == pytest.approx(counter.get_total_flops() / 1e9, abs=1e-6) and card["gflops"] > 0
    assert card["categories"] == CLASSES and card["num_classes"] == 10
    assert card["input_size"] == 28 and card["image_channels"] == card["model_channels"] == 1
    assert card["mean"] == state["mean"] and card["std"] == state["std"]
    assert card["preprocessing"]["pad"] == 2 and card["preprocessing"]["resize"] == 28
    assert card["recipe"] == "main" and card["seed"] == 0 and card["torchcls_version"] == __version__
    assert config_of(card["command"]) == state["config"]  # the command reproduces the run's config
    assert {"epochs", "train_subset", "lr", "amp"} <= card["config_changes"].keys()
    assert "dataset" not in card["config_changes"]  # the recipe's own value
    m = card["metrics"]
    assert (m["epoch"], m["epochs"], m["set"]) == (2, 2, "test")
    assert m["acc"] == state["acc"] and m["best_acc"] == state["best_acc"] > 10
    res = json.loads((run_dir / "results.json").read_text())
    assert card["results"]["final"] == res["final"] and card["results"]["best"] == res["best"]
    assert card["hardware"] == res["hardware"] and card["wall_time_s"] == res["wall_time_s"] > 0
    assert card["notes"] == [] and len(card["sha256"]) == 64


@needs_fmnist
def test_card_text_json_markdown(run_dir, capsys):
    ckpt = run_dir / "model_best.pth.tar"
    card = checkpoint_card(ckpt)
    assert main(["card", str(ckpt)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("speednet_mini on fashion-mnist")
    for part in (f"{card['num_params']:,}", "torchcls train --recipe main", "T-shirt/top", "zero-pad 2 px",
                 f"best {card['metrics']['best_acc']:.2f}%", card["hardware"]["cpu"]):  # fmt: skip
        assert part in text, part
    assert main(["card", str(ckpt), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(card))
    assert main(["card", str(ckpt), "--format", "markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0] == "## speednet_mini on fashion-mnist" and md[2] == "| field | value |"
    assert any(line.startswith("| parameters |") for line in md)


@needs_fmnist
def test_results_of_another_run_are_left_out(run_dir, tmp_path):
    shutil.copy(run_dir / "checkpoint.pth.tar", tmp_path / "checkpoint.pth.tar")
    res = json.loads((run_dir / "results.json").read_text())
    (tmp_path / "results.json").write_text(json.dumps({**res, "seed": 99}))
    card = checkpoint_card(tmp_path / "checkpoint.pth.tar")
    assert card["results"] is None and card["wall_time_s"] is None and "another run" in card["notes"][0]
    (tmp_path / "results.json").unlink()
    assert checkpoint_card(tmp_path / "checkpoint.pth.tar")["notes"] == []


def test_command_of_a_run_without_recipe_round_trips():
    cfg = build_config({"arch": "resnet18", "dataset": "imagenet", "data_dir": "/x", "epochs": 3, "nesterov": True,
                        "flip": False, "tta_flip": True, "schedule": [1, 2], "res_ramp": [0.0, 2.0],
                        "min_train_size": 16, "seed": 5})  # fmt: skip
    command = training_command(cfg.to_dict())
    assert "--recipe" not in command and "--nesterov" in command and "--flip off" in command
    assert "--train-batch" not in command  # the image-folder default (256), not a change
    assert config_of(command) == cfg.to_dict()
    assert config_changes(cfg.to_dict())["epochs"] == 3
    plain = build_config({"arch": "resnet20", "dataset": "cifar10", "epochs": 3}).to_dict()  # the defaults' model
    assert "--arch resnet20" in training_command(plain) and config_of(training_command(plain)) == plain


def test_foreign_checkpoint_is_one_line(tmp_path, capsys):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "sd.pth")
    assert main(["card", str(tmp_path / "sd.pth")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a torchcls" in err
