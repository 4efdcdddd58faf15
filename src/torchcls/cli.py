"""One entry point: torchcls train | eval | models | bench | plot.

`torchcls train` accepts every flag of the original cifar.py with its meaning, so that the
commands of its TRAINING.md run with only the program name changed.
"""
from __future__ import annotations

import argparse
import sys

from torchcls import __version__
from torchcls.errors import Interrupted, UserError

S = argparse.SUPPRESS  # a flag that was not given leaves the recipe's or default value


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {v!r}")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("-d", "--dataset", default=S, help="cifar10 | cifar100 | fashion-mnist | imagenet (alias "
                   "imagefolder: DIR/train/<class>/ and DIR/val/<class>/) (default: cifar10 with -a; the main "
                   "recipe's fashion-mnist without)")
    g.add_argument("--data-dir", "--data", dest="data_dir", default=S,
                   help="folder holding the data set (folder or official archive; for imagenet the folder with "
                   "train/ and val/, imagenet.py's --data); default ./data, $TORCHCLS_DATA when set")
    g.add_argument("--download", action="store_true", default=S, help="fetch a missing CIFAR data set")
    g.add_argument("--val-split", type=int, default=S, metavar="N",
                   help="hold out N training images to choose the best model on (default 0: the test set)")
    g.add_argument("--train-subset", dest="train_subset", type=int, default=S, metavar="N",
                   help="train on a seeded random subset of N training images (quick experiments)")
    g.add_argument("--test-subset", dest="test_subset", type=int, default=S, metavar="N",
                   help="evaluate on the first N test images")
    g.add_argument("-j", "--workers", type=int, default=S,
                   help="data loading worker processes per training process (image folders; default 4)")
    g.add_argument("--train-size", dest="train_size", type=int, default=S, metavar="PX",
                   help="image folders: RandomResizedCrop size for training (default 224)")
    g.add_argument("--val-size", dest="val_size", type=int, default=S, metavar="PX",
                   help="image folders: CenterCrop size for evaluation (default 224)")
    g.add_argument("--val-resize", dest="val_resize", type=int, default=S, metavar="PX",
                   help="image folders: shorter side before the evaluation crop (default 256)")
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
    g.add_argument("--pretrained", type=_bool, nargs="?", const=True, default=S,
                   help="start from torchvision's ImageNet weights, read from the local torch hub cache "
                   "(never downloaded)")
    g = p.add_argument_group("schedule and optimizer")
    g.add_argument("--epochs", type=int, default=S)
    g.add_argument("--start-epoch", dest="start_epoch", type=int, default=S)
    g.add_argument("--train-batch", dest="train_batch", type=int, default=S,
                   help="GLOBAL batch size, split evenly over processes under torchrun (default 128)")
    g.add_argument("--test-batch", dest="test_batch", type=int, default=S)
    g.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=S)
    g.add_argument("--lr-schedule", dest="lr_schedule", choices=["step", "cosine", "onecycle"], default=S)
    g.add_argument("--schedule", type=int, nargs="+", default=S,
                   help="step schedule: multiply the rate by --gamma at the start of these 0-based epochs")
    g.add_argument("--gamma", type=float, default=S)
    g.add_argument("--warmup-epochs", dest="warmup_epochs", type=float, default=S)
    g.add_argument("--final-lr-factor", dest="final_lr_factor", type=float, default=S)
    g.add_argument("--momentum", type=float, default=S)
    g.add_argument("--nesterov", type=_bool, nargs="?", const=True, default=S)
    g.add_argument("--weight-decay", "--wd", dest="weight_decay", type=float, default=S)
    g.add_argument("--ema-decay", dest="ema_decay", type=float, default=S, metavar="D",
                   help="evaluate and save an exponential moving average of the weights (decay D per update; 0: off)")
    g.add_argument("--ema-every", dest="ema_every", type=int, default=S, metavar="N",
                   help="optimizer steps between EMA updates (default 1)")
    g.add_argument("--bias-lr-scale", dest="bias_lr_scale", type=float, default=S, metavar="X",
                   help="learning rate x X for biases and norm parameters (their weight decay / X)")
    g.add_argument("--no-wd-norm-bias", dest="no_wd_norm_bias", type=_bool, nargs="?", const=True, default=S,
                   help="no weight decay on norm layers and biases")
    g.add_argument("--label-smoothing", dest="label_smoothing", type=float, default=S)
    g = p.add_argument_group("augmentation (batched on the device)")
    g.add_argument("--crop-padding", dest="crop_padding", type=int, default=S)
    g.add_argument("--flip", type=_bool, default=S)
    g.add_argument("--cutout", type=int, default=S, metavar="SIZE")
    g.add_argument("--train-crop", dest="train_crop", type=int, default=S, metavar="PX",
                   help="train on random PXxPX windows of the (padded) image; evaluation stays at full size")
    g.add_argument("--min-train-size", dest="min_train_size", type=int, default=S, metavar="PX",
                   help="progressive resizing: train at PX pixels at the start of --res-ramp (0: off)")
    g.add_argument("--res-ramp", dest="res_ramp", type=float, nargs=2, default=S, metavar=("START", "END"),
                   help="epochs over which the training size grows linearly to the full size")
    g.add_argument("--tta-flip", dest="tta_flip", type=_bool, nargs="?", const=True, default=S)
    g.add_argument("--tta-shift", dest="tta_shift", type=int, default=S, metavar="PX",
                   help="test-time augmentation: also average views translated by PX pixels (0: off)")
    g.add_argument("--tta-epochs", dest="tta_epochs", choices=["all", "last"], default=S,
                   help="last: evaluate earlier epochs without test-time augmentation (faster; the best-model choice "
                   "then compares their plain accuracy with the last epoch's augmented one)")
    g = p.add_argument_group("speed")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=S)
    g.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default=S)
    g.add_argument("--channels-last", dest="channels_last", choices=["auto", "on", "off"], default=S)
    g.add_argument("--compile", type=_bool, nargs="?", const=True, default=S)
    g.add_argument("--threads", type=int, default=S)
    g.add_argument("--malloc", choices=["auto", "off"], default=S,
                   help="auto (default): glibc keeps freed step buffers in the heap instead of returning them "
                   "to the kernel each step (faster CPU steps); off: leave the C library's settings (a process "
                   "already tuned by an earlier run stays tuned)")
    g.add_argument("--gpu-id", dest="gpu_id", default=S, help="sets CUDA_VISIBLE_DEVICES (the original's flag)")
    g.add_argument("--dist-backend", dest="dist_backend", choices=["auto", "nccl", "gloo"], default=S)
    g.add_argument("--sync-bn", dest="sync_bn", type=_bool, nargs="?", const=True, default=S,
                   help="under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)")
    g = p.add_argument_group("run")
    g.add_argument("--recipe", default=S, help="a recipe name (recipes/NAME.yaml) or YAML file; flags win")
    g.add_argument("-c", "--checkpoint", default=S, help="run folder (default checkpoints/<dataset>/<arch>)")
    g.add_argument("--resume", default=S, metavar="PATH",
                   help="checkpoint to continue from, or 'auto': the run folder's checkpoint.pth.tar if there is "
                   "one (end of an epoch, or mid-epoch after Ctrl-C/SIGTERM), else start a new run; so the same "
                   "command can be rerun after any crash (a finished run says so and exits 2)")
    g.add_argument("-e", "--evaluate", action="store_true", default=S,
                   help="only evaluate the --resume checkpoint (writes no log)")
    g.add_argument("--manualSeed", "--seed", dest="seed", type=int, default=S)
    g.add_argument("--log-interval", dest="log_interval", type=float, default=S,
                   help="seconds between progress lines when output is not a terminal")
    g.add_argument("--tensorboard", type=_bool, default=S)
    g.add_argument("--plot", type=_bool, default=S)
    g.add_argument("--skip-nonfinite", dest="skip_nonfinite", type=int, default=S, metavar="N",
                   help="skip up to N optimizer steps per epoch whose loss is NaN/inf (default 0: stop at the "
                   "first, keeping the last good checkpoint)")


def config_from_args(ns: argparse.Namespace):
    from torchcls.config import build_config

    given = {k: v for k, v in vars(ns).items() if k not in ("command", "func")}
    recipe = given.pop("recipe", None)
    return build_config(given, recipe=recipe)


def cmd_train(ns) -> int:
    cfg = config_from_args(ns)
    if cfg.evaluate:
        if not cfg.resume:
            raise UserError("-e/--evaluate needs --resume PATH naming the checkpoint to evaluate")
        from torchcls.engine.evaluate_checkpoint import evaluate_checkpoint, format_result

        res = evaluate_checkpoint(cfg.resume, dataset=cfg.dataset, data_dir=cfg.data_dir,
                                  batch_size=cfg.test_batch, tta_flip=cfg.tta_flip, device=cfg.device,
                                  tta_shift=cfg.tta_shift)
        print(format_result(res))
        return 0
    from torchcls.engine.train import train

    train(cfg)
    return 0


def cmd_eval(ns) -> int:
    import json

    from torchcls.engine.evaluate_checkpoint import evaluate_checkpoint, format_result

    res = evaluate_checkpoint(ns.checkpoint, dataset=ns.dataset, data_dir=ns.data_dir,
                              batch_size=ns.batch_size, tta_flip=ns.tta_flip, device=ns.device, tta_shift=ns.tta_shift,
                              split=ns.split)
    print(json.dumps(res, indent=2) if ns.json else format_result(res))
    return 0


def cmd_models(ns) -> int:
    from torchcls.models import summary

    return summary.run(ns)


def cmd_plot(ns) -> int:
    from pathlib import Path

    from torchcls.report.plot import plot_run

    out = plot_run(Path(ns.run_dir), Path(ns.output) if ns.output else None)
    if out is None:
        raise UserError(f"{ns.run_dir} has no metrics.jsonl to plot; is it a torchcls run folder?")
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torchcls", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"torchcls {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (no arguments: the main recipe, ResNet-20 on Fashion-MNIST)")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a data set's test split")
    e.add_argument("checkpoint")
    e.add_argument("-d", "--dataset", default=None, help="default: the checkpoint's data set")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--split", choices=["test", "train"], default="test")
    e.add_argument("--batch-size", type=int, default=500)
    e.add_argument("--tta-flip", action="store_true", help="average with the horizontally flipped image")
    e.add_argument("--tta-shift", type=int, default=0, metavar="PX",
                   help="also average views translated by PX pixels up-left and down-right")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("models", help="list every registered model with parameters and GFLOPs")
    from torchcls.models import summary

    summary.add_arguments(m)
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", help="training throughput and peak memory; --vs-reference: against the "
                       "original's loop")
    from torchcls import bench

    bench.add_arguments(b)
    b.set_defaults(func=bench.run)

    pl = sub.add_parser("plot", help="draw log.png of a run folder")
    pl.add_argument("run_dir")
    pl.add_argument("-o", "--output", default=None)
    pl.set_defaults(func=cmd_plot)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.func(ns)
    except UserError as e:
        print(f"torchcls: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"torchcls: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("torchcls: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
