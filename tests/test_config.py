"""Flags, recipes and validation: the original's commands mean the same thing here."""

import itertools
import shlex

import pytest

from torchcls.cli import build_parser, main
from torchcls.commands.train import config_from_args
from torchcls.config import MAIN_RECIPE, build_config, find_recipe, list_recipes, load_recipe
from torchcls.engine.optim import lr_factor
from torchcls.errors import UserError
from torchcls.models import create_model

# the CIFAR commands of the original TRAINING.md, with `python cifar.py` replaced by `torchcls train`
TRAINING_MD = {
    "alexnet": "-a alexnet --epochs 164 --schedule 81 122 --gamma 0.1 --checkpoint checkpoints/cifar10/alexnet",
    "vgg19_bn": "-a vgg19_bn --epochs 164 --schedule 81 122 --gamma 0.1 --checkpoint checkpoints/cifar10/vgg19_bn",
    "resnet110": (
        "-a resnet --depth 110 --epochs 164 --schedule 81 122 --gamma 0.1 --wd 1e-4 "
        "--checkpoint checkpoints/cifar10/resnet-110"
    ),
    "preresnet110": (
        "-a preresnet --depth 110 --epochs 164 --schedule 81 122 --gamma 0.1 --wd 1e-4 "
        "--checkpoint checkpoints/cifar10/preresnet-110"
    ),
    "resnext8": (
        "-a resnext --depth 29 --cardinality 8 --widen-factor 4 --schedule 150 225 --wd 5e-4 "
        "--gamma 0.1 --checkpoint checkpoints/cifar10/resnext-8x64d"
    ),
    "wrn": (
        "-a wrn --depth 28 --depth 28 --widen-factor 10 --drop 0.3 --epochs 200 --schedule 60 120 160 "
        "--wd 5e-4 --gamma 0.2 --checkpoint checkpoints/cifar10/WRN-28-10-drop"
    ),
    "densenet": (
        "-a densenet --depth 100 --growthRate 12 --train-batch 64 --epochs 300 --schedule 150 225 "
        "--wd 1e-4 --gamma 0.1 --checkpoint checkpoints/cifar10/densenet-bc-100-12"
    ),
}


def parse(cmd: str):
    return config_from_args(build_parser().parse_args(["train", *shlex.split(cmd)]))


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_wrn_command_parses_to_the_right_config():
    cfg = parse(TRAINING_MD["wrn"])
    assert (cfg.dataset, cfg.arch, cfg.depth, cfg.widen_factor, cfg.drop_rate) == ("cifar10", "wrn", 28, 10, 0.3)
    assert (cfg.epochs, cfg.schedule, cfg.gamma, cfg.weight_decay) == (200, [60, 120, 160], 0.2, 5e-4)
    assert (cfg.lr, cfg.momentum, cfg.train_batch, cfg.test_batch) == (0.1, 0.9, 128, 100)
    assert str(cfg.run_dir()) == "checkpoints/cifar10/WRN-28-10-drop"
    assert n_params(create_model(cfg.arch, **cfg.model_kwargs())) == 36_479_194


@pytest.mark.parametrize(
    "key,params",
    [
        ("alexnet", 2_472_266),
        ("vgg19_bn", 20_040_522),
        ("resnet110", 1_730_714),
        ("preresnet110", 1_730_522),
        ("densenet", 769_162),
    ],
)
def test_training_md_commands_build_their_networks(key, params):
    cfg = parse(TRAINING_MD[key])
    assert cfg.lr_schedule == "step"
    assert n_params(create_model(cfg.arch, **cfg.model_kwargs())) == params


def test_original_defaults_apply_with_arch():
    cfg = parse("-a resnext --depth 29 --cardinality 8 --widen-factor 4")
    assert cfg.epochs == 300 and cfg.schedule == [150, 225] and cfg.dataset == "cifar10"
    assert cfg.weight_decay == 5e-4 and cfg.lr == 0.1


def test_no_arguments_is_the_main_recipe_and_flags_win():
    cfg = parse("")
    assert (cfg.recipe, cfg.dataset, cfg.arch) == ("main", "fashion-mnist", "speednet_mini")
    cfg = parse("--epochs 2 --lr 0.05")
    assert (cfg.dataset, cfg.epochs, cfg.lr) == ("fashion-mnist", 2, 0.05)
    # the recipe's warm-up (1 of 6 epochs) keeps its share of a run shortened with --epochs
    assert parse("--epochs 1").warmup_epochs == pytest.approx(1 / 6)
    assert parse("--epochs 12").warmup_epochs == 1
    with pytest.raises(UserError, match=r"--warmup-epochs must be in \[0, 1\), got 1"):
        parse("--epochs 1 --warmup-epochs 1")
    # another data set without -a: the original's defaults (the main recipe is Fashion-MNIST's)
    cfg = parse("--dataset cifar100 --epochs 2")
    assert (cfg.recipe, cfg.arch, cfg.dataset, cfg.train_crop, cfg.crop_padding) == (None, "resnet20", "cifar100", 0, 4)


def test_recipe_file_and_flag_precedence(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("arch: resnet56\ndataset: cifar100\nepochs: 7\nlr: 0.3\n")
    cfg = parse(f"--recipe {r} --lr 0.01")
    assert (cfg.arch, cfg.dataset, cfg.epochs, cfg.lr) == ("resnet56", "cifar100", 7, 0.01)
    r.write_text("epochz: 3\n")
    with pytest.raises(UserError, match="unknown keys epochz"):
        parse(f"--recipe {r}")


def test_epochs_flag_rescales_a_recipes_epoch_counts(tmp_path):
    # a recipe shortened (or lengthened) with --epochs keeps the shape of its schedule
    path = tmp_path / "r.yaml"
    path.write_text("arch: resnet20\nepochs: 164\nschedule: [81, 122]\nwarmup_epochs: 4\neval_every: 164\n")
    cfg = build_config({"epochs": 10}, recipe=str(path))
    assert (cfg.schedule, cfg.warmup_epochs, cfg.eval_every) == ([5, 7], pytest.approx(10 * 4 / 164), 10)
    assert build_config({"epochs": 2}, recipe=str(path)).schedule == [1]  # milestones stay inside the run
    cfg = build_config({"epochs": 10, "schedule": [3, 6], "eval_every": 2}, recipe=str(path))
    assert (cfg.schedule, cfg.eval_every) == ([3, 6], 2)  # what the user sets wins
    cfg = build_config({"epochs": 10}, recipe="original/cifar10-resnet110")  # refused before: milestones 81, 122
    assert cfg.schedule == [5, 7] and cfg.epochs == 10
    cfg = build_config({"epochs": 1}, recipe="original/cifar10-resnet110")  # refused before: no milestone fits
    assert cfg.schedule == [] and cfg.epochs == 1


def test_every_packaged_recipe_loads_and_builds():
    recipes = list_recipes()
    names = [name for name, _ in recipes]
    assert MAIN_RECIPE in names and names == sorted(names) and len(set(names)) == len(names)
    for name, description in recipes:
        assert description and "\n" not in description, name  # each recipe says what it is, in one line
        keys = load_recipe(name)
        assert "description" not in keys and {"dataset", "arch", "epochs"} <= keys.keys(), name
        cfg = build_config({}, recipe=name)  # valid values too, not only known keys
        assert cfg.recipe == name and cfg.arch == keys["arch"]
    assert dict(recipes)[MAIN_RECIPE].startswith("SpeedNet-mini on Fashion-MNIST")


def test_recipes_are_found_inside_the_package(tmp_path, monkeypatch):
    # not through the repository's folders nor the current directory: a wheel has only the package
    main_file = find_recipe(MAIN_RECIPE)
    assert main_file.name == "main.yaml" and "torchcls" in str(main_file) and "recipes" in str(main_file)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "local.yaml").write_text("epochs: 3\n")
    assert load_recipe(MAIN_RECIPE)["dataset"] == "fashion-mnist"
    with pytest.raises(UserError, match=r"unknown recipe 'local'; known recipes: .*\bmain\b"):
        find_recipe("local")  # ./recipes/ is not searched; a path is: recipes/local.yaml
    assert load_recipe("recipes/local.yaml") == {"epochs": 3}
    with pytest.raises(UserError, match="recipe file missing.yaml not found"):
        find_recipe("missing.yaml")


def test_step_schedule_semantics():
    cfg = parse("-a resnet20 --epochs 164 --schedule 81 122 --gamma 0.1")
    spe = 10
    rates = [round(lr_factor(e * spe, spe, cfg), 8) for e in range(164)]
    assert rates.count(1.0) == 81 and rates.count(0.1) == 41 and rates.count(0.01) == 42
    assert rates[80] == 1.0 and rates[81] == 0.1 and rates[122] == 0.01


def test_cosine_and_onecycle_with_warmup():
    cfg = parse("-a resnet20 --epochs 10 --lr-schedule onecycle --warmup-epochs 2")
    spe = 5
    f = [lr_factor(s, spe, cfg) for s in range(50)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert max(f) == pytest.approx(1.0) and f[-1] < 0.05
    assert all(a >= b for a, b in itertools.pairwise(f[9:]))
    cfg = parse("-a resnet20 --epochs 10 --lr-schedule cosine")
    assert lr_factor(0, spe, cfg) == 1.0 and lr_factor(25, spe, cfg) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    "args,needle",
    [
        ("-a resnet21", "unknown model"),
        ("-a resnet --depth 21", "6n+2"),
        ("-a resnet20 --epochs -3", "--epochs must be at least 1"),
        ("-a resnet20 --epochs 100 --schedule 50 150", "outside the run"),
        ("-a resnet20 --dataset imagenet22k", "unknown data set"),
        ("--recipe no-such-recipe", "unknown recipe"),
    ],
)
def test_user_mistakes_fail_fast_with_one_line(args, needle, capsys, tmp_path):
    rc = main(["train", *shlex.split(args), "--checkpoint", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # no work started, nothing written
