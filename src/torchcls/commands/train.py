"""`torchcls train`: every flag of the original cifar.py with its meaning, so that the commands of
its TRAINING.md run with only the program name changed; recipes and flags fill one TrainConfig."""

from __future__ import annotations

import argparse

from torchcls.commands.eval import evaluate_checkpoint, format_result
from torchcls.config import LOOKAHEAD_SCHEDULES, MUON_NS_DTYPES, OPTIMIZERS, TrainConfig, build_config
from torchcls.engine.train import train
from torchcls.errors import UserError

S = argparse.SUPPRESS  # a flag that was not given leaves the recipe's or default value


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {v!r}")


def _switch(g, *names: str, **kw) -> None:
    """An on/off flag: `--name` alone is on, `--name off|false|0` off (see _bool)."""
    g.add_argument(*names, type=_bool, nargs="?", const=True, default=S, **kw)


def _data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument(
        "-d",
        "--dataset",
        default=S,
        help="cifar10 | cifar100 | fashion-mnist | imagenet (alias "
        "imagefolder: DIR/train/<class>/ and DIR/val/<class>/) (default: cifar10 with -a; the main "
        "recipe's fashion-mnist without)",
    )
    g.add_argument(
        "--data-dir",
        "--data",
        dest="data_dir",
        default=S,
        help="folder holding the data set (folder or official archive; for imagenet the folder with "
        "train/ and val/, imagenet.py's --data); default ./data, $TORCHCLS_DATA when set",
    )
    g.add_argument("--download", action="store_true", default=S, help="fetch a missing CIFAR data set")
    g.add_argument(
        "--val-split",
        type=int,
        default=S,
        metavar="N",
        help="hold out N training images to choose the best model on (default 0: the test set)",
    )
    g.add_argument(
        "--train-subset",
        dest="train_subset",
        type=int,
        default=S,
        metavar="N",
        help="train on a seeded random subset of N training images (quick experiments)",
    )
    g.add_argument(
        "--test-subset",
        dest="test_subset",
        type=int,
        default=S,
        metavar="N",
        help="evaluate on the first N test images",
    )
    g.add_argument(
        "-j",
        "--workers",
        type=int,
        default=S,
        help="data loading worker processes per training process (image folders; default 4)",
    )
    g.add_argument(
        "--train-size",
        dest="train_size",
        type=int,
        default=S,
        metavar="PX",
        help="image folders: RandomResizedCrop size for training (default 224)",
    )
    g.add_argument(
        "--val-size",
        dest="val_size",
        type=int,
        default=S,
        metavar="PX",
        help="image folders: CenterCrop size for evaluation (default 224)",
    )
    g.add_argument(
        "--val-resize",
        dest="val_resize",
        type=int,
        default=S,
        metavar="PX",
        help="image folders: shorter side before the evaluation crop (default 256)",
    )
    g.add_argument(
        "--crop-scale",
        dest="crop_scale",
        type=float,
        nargs=2,
        default=S,
        metavar=("MIN", "MAX"),
        help="image folders: RandomResizedCrop's range of the image's area (default 0.08 1.0)",
    )
    g.add_argument(
        "--store",
        default=S,
        metavar="auto|off|PATH",
        help="image folders: decoded image store (default auto: built once in the cache folder, "
        "reused while the folder is unchanged; off: decode the files every epoch; PATH: that store)",
    )
    g.add_argument(
        "--store-max-size",
        dest="store_max_size",
        type=int,
        default=S,
        metavar="PX",
        help="image folders: shorter side of the stored images (default: the larger of --val-resize and --train-size)",
    )


def _model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (the original's flags)")
    g.add_argument("-a", "--arch", default=S, help="model or family name (see `torchcls models`)")
    g.add_argument("--depth", type=int, default=S)
    g.add_argument("--block-name", dest="block_name", default=S, help="BasicBlock | Bottleneck")
    g.add_argument("--cardinality", type=int, default=S)
    g.add_argument("--widen-factor", dest="widen_factor", type=int, default=S)
    g.add_argument("--growthRate", "--growth-rate", dest="growth_rate", type=int, default=S)
    g.add_argument("--compressionRate", "--compression-rate", dest="compression_rate", type=int, default=S)
    g.add_argument("--drop", "--dropout", dest="drop_rate", type=float, default=S)
    g.add_argument("--base-width", dest="base_width", type=int, default=S)
    _switch(
        g,
        "--pretrained",
        help="start from torchvision's ImageNet weights, read from the local torch hub cache (never downloaded)",
    )


def _schedule_and_optimizer_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("schedule and optimizer")
    g.add_argument(
        "--epochs",
        type=int,
        default=S,
        help="with --recipe: its warm-up, step milestones, early-only whitening bias and end-only "
        "evaluation keep their share of the run (unless given too)",
    )
    g.add_argument("--start-epoch", dest="start_epoch", type=int, default=S)
    g.add_argument(
        "--train-batch",
        dest="train_batch",
        type=int,
        default=S,
        help="GLOBAL batch size, split evenly over processes under torchrun (default 128)",
    )
    g.add_argument("--test-batch", dest="test_batch", type=int, default=S)
    g.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=S)
    g.add_argument("--lr-schedule", dest="lr_schedule", choices=["step", "cosine", "onecycle", "flatcos"], default=S)
    g.add_argument(
        "--schedule",
        type=int,
        nargs="+",
        default=S,
        help="step schedule: multiply the rate by --gamma at the start of these 0-based epochs",
    )
    g.add_argument("--gamma", type=float, default=S)
    g.add_argument("--warmup-epochs", dest="warmup_epochs", type=float, default=S)
    g.add_argument("--final-lr-factor", dest="final_lr_factor", type=float, default=S)
    g.add_argument(
        "--anneal-start",
        dest="anneal_start",
        type=float,
        default=S,
        metavar="F",
        help="flatcos: hold the rate for this fraction of the run, then a cosine decay (default 0.75)",
    )
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), default=S, help="default sgd")
    g.add_argument("--betas", type=float, nargs=2, default=S, metavar=("B1", "B2"), help="adamw/radam betas")
    g.add_argument(
        "--muon-lr",
        dest="muon_lr",
        type=float,
        default=S,
        help="--optimizer muon: the convolution filters' rate (Muon; the rest take SGD at --lr; default 0.24)",
    )
    g.add_argument("--muon-momentum", dest="muon_momentum", type=float, default=S, help="muon: default 0.6")
    g.add_argument(
        "--muon-ns-dtype",
        dest="muon_ns_dtype",
        choices=MUON_NS_DTYPES,
        default=S,
        help="muon: the orthogonalisation's dtype: fp32 (default), or auto: bf16 when the run autocasts in bf16 "
        "(faster where bf16 is native; docs/RESULTS.md), else fp32",
    )
    g.add_argument(
        "--whiten-bias-epochs",
        dest="whiten_bias_epochs",
        type=float,
        default=S,
        metavar="E",
        help="train the whitening first layer's bias (speednet) only for E epochs, its rate falling "
        "linearly to 0 by then (0: trained throughout, default)",
    )
    g.add_argument("--adam-eps", dest="adam_eps", type=float, default=S)
    g.add_argument(
        "--lookahead-k",
        dest="lookahead_k",
        type=int,
        default=S,
        metavar="K",
        help="Lookahead: every K steps move slow weights --lookahead-alpha of the way to the fast ones "
        "and restart from them (0: off; with --optimizer radam this is Ranger)",
    )
    g.add_argument("--lookahead-alpha", dest="lookahead_alpha", type=float, default=S)
    g.add_argument(
        "--lookahead-schedule",
        dest="lookahead_schedule",
        choices=list(LOOKAHEAD_SCHEDULES),
        default=S,
        help="constant: --lookahead-alpha at every sync (default); cubic (airbench94's): from 1 (no "
        "averaging) at the start to --lookahead-alpha at the end, 1 - (1 - alpha) * progress^3",
    )
    g.add_argument("--momentum", type=float, default=S)
    _switch(g, "--nesterov")
    g.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float, default=S)
    g.add_argument(
        "--ema-decay",
        dest="ema_decay",
        type=float,
        default=S,
        metavar="D",
        help="evaluate and save an exponential moving average of the weights (decay D per update; 0: off)",
    )
    g.add_argument(
        "--ema-every",
        dest="ema_every",
        type=int,
        default=S,
        metavar="N",
        help="optimizer steps between EMA updates (default 1)",
    )
    g.add_argument(
        "--bias-lr-scale",
        dest="bias_lr_scale",
        type=float,
        default=S,
        metavar="X",
        help="learning rate x X for biases and norm parameters (their weight decay / X)",
    )
    _switch(g, "--no-wd-norm-bias", dest="no_wd_norm_bias", help="no weight decay on norm layers and biases")
    g.add_argument("--label-smoothing", dest="label_smoothing", type=float, default=S)
    g.add_argument(
        "--mixup",
        type=float,
        default=S,
        metavar="ALPHA",
        help="mixup: each batch blended with a shuffled copy of itself, lambda ~ Beta(ALPHA, ALPHA) (0: off)",
    )


def _augmentation_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation (batched on the device)")
    g.add_argument("--crop-padding", dest="crop_padding", type=int, default=S)
    g.add_argument("--flip", type=_bool, default=S)
    _switch(
        g,
        "--flip-alternate",
        dest="flip_alternate",
        help="mirror each image in every other epoch, the first at random (airbench's derandomised flips)",
    )
    g.add_argument("--cutout", type=int, default=S, metavar="SIZE")
    g.add_argument(
        "--train-crop",
        dest="train_crop",
        type=int,
        default=S,
        metavar="PX",
        help="train on random PXxPX windows of the (padded) image; evaluation stays at full size",
    )
    g.add_argument(
        "--min-train-size",
        dest="min_train_size",
        type=int,
        default=S,
        metavar="PX",
        help="progressive resizing: train at PX pixels at the start of --res-ramp (0: off)",
    )
    g.add_argument(
        "--res-ramp",
        dest="res_ramp",
        type=float,
        nargs=2,
        default=S,
        metavar=("START", "END"),
        help="epochs over which the training size grows linearly to the full size",
    )
    _switch(g, "--tta-flip", dest="tta_flip")
    g.add_argument(
        "--tta-below",
        dest="tta_below",
        type=float,
        default=S,
        metavar="P",
        help="selective TTA: the extra views only for images whose top class has probability < P (0: all)",
    )
    g.add_argument(
        "--tta-shift",
        dest="tta_shift",
        type=int,
        default=S,
        metavar="PX",
        help="test-time augmentation: also average views translated by PX pixels (0: off)",
    )
    g.add_argument(
        "--tta-epochs",
        dest="tta_epochs",
        choices=["all", "last"],
        default=S,
        help="last: evaluate earlier epochs without test-time augmentation (faster; the best-model choice "
        "then compares their plain accuracy with the last epoch's augmented one)",
    )
    g.add_argument(
        "--eval-every",
        dest="eval_every",
        type=int,
        default=S,
        metavar="N",
        help="evaluate after every Nth epoch and after the last one (default 1; the others only train, "
        "their rows leave the validation figures empty, and model_best.pth.tar is chosen among the evaluated ones)",
    )


def _speed_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speed")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=S)
    g.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default=S)
    g.add_argument("--channels-last", dest="channels_last", choices=["auto", "on", "off"], default=S)
    _switch(g, "--compile")
    g.add_argument("--threads", type=int, default=S)
    g.add_argument(
        "--malloc",
        choices=["auto", "off"],
        default=S,
        help="auto (default): glibc keeps freed step buffers in the heap instead of returning them "
        "to the kernel each step (faster CPU steps); off: leave the C library's settings (a process "
        "already tuned by an earlier run stays tuned)",
    )
    g.add_argument("--gpu-id", dest="gpu_id", default=S, help="sets CUDA_VISIBLE_DEVICES (the original's flag)")
    g.add_argument("--dist-backend", dest="dist_backend", choices=["auto", "nccl", "gloo"], default=S)
    _switch(
        g,
        "--sync-bn",
        dest="sync_bn",
        help="under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)",
    )


def _run_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument(
        "--recipe", default=S, help="a built-in recipe name (`torchcls recipes` lists them) or a YAML file; flags win"
    )
    g.add_argument("-c", "--checkpoint", default=S, help="run folder (default checkpoints/<dataset>/<arch>)")
    g.add_argument(
        "--resume",
        default=S,
        metavar="PATH",
        help="checkpoint to continue from, or 'auto': the run folder's checkpoint.pth.tar if there is "
        "one (end of an epoch, or mid-epoch after Ctrl-C/SIGTERM), else start a new run; so the same "
        "command can be rerun after any crash (a finished run says so and exits 2)",
    )
    g.add_argument(
        "-e", "--evaluate", action="store_true", default=S, help="only evaluate the --resume checkpoint (writes no log)"
    )
    g.add_argument("--manualSeed", "--seed", dest="seed", type=int, default=S)
    g.add_argument(
        "--log-interval",
        dest="log_interval",
        type=float,
        default=S,
        help="seconds between progress lines when output is not a terminal",
    )
    g.add_argument("--tensorboard", type=_bool, default=S)
    g.add_argument("--plot", type=_bool, default=S)
    g.add_argument(
        "--skip-nonfinite",
        dest="skip_nonfinite",
        type=int,
        default=S,
        metavar="N",
        help="skip up to N optimizer steps per epoch whose loss is NaN/inf (default 0: stop at the "
        "first, keeping the last good checkpoint)",
    )


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `torchcls train` (and of `bench`, which takes the same run)."""
    _data_arguments(p)
    _model_arguments(p)
    _schedule_and_optimizer_arguments(p)
    _augmentation_arguments(p)
    _speed_arguments(p)
    _run_arguments(p)


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    """The run's config from parsed flags: defaults < recipe < the flags given."""
    given = {k: v for k, v in vars(ns).items() if k not in ("command", "func")}
    recipe = given.pop("recipe", None)
    return build_config(given, recipe=recipe)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_train_arguments(p)


def run(ns: argparse.Namespace) -> int:
    cfg = config_from_args(ns)
    if cfg.evaluate:  # the original's -e: evaluate the --resume checkpoint, as `torchcls eval` does
        if not cfg.resume:
            raise UserError("-e/--evaluate needs --resume PATH naming the checkpoint to evaluate")
        res = evaluate_checkpoint(
            cfg.resume,
            dataset=cfg.dataset,
            data_dir=cfg.data_dir,
            batch_size=cfg.test_batch,
            tta_flip=cfg.tta_flip,
            device=cfg.device,
            tta_shift=cfg.tta_shift,
        )
        print(format_result(res))
        return 0
    train(cfg)
    return 0
