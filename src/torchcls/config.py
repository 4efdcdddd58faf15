"""One typed config for a run. Defaults < recipe file < command-line flags; saved with every run.

The base defaults are those of the original cifar.py, so that its TRAINING.md commands mean the
same thing here. `torchcls train` given none of `-a/--arch`, `-d/--dataset` and `--recipe` starts
from the built-in main recipe instead (SpeedNet-mini on Fashion-MNIST, two to three minutes on a 2-core CPU).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from torchcls.data.datasets import canonical_name, is_folder_dataset
from torchcls.errors import UserError
from torchcls.models import create_model
from torchcls.models.imagenet.pretrained import pretrained_file

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# the recipes shipped inside the package (src/torchcls/recipes/NAME.yaml), found through
# importlib.resources so that they are there in a wheel or a plain `pip install .` too
RECIPE_PACKAGE = "torchcls"
RECIPE_FOLDER = "recipes"
RECIPE_SUFFIX = ".yaml"
MAIN_RECIPE = "main"
OPTIMIZERS = ("sgd", "adamw", "radam", "muon")
MUON_NS_DTYPES = ("fp32", "auto")
LOOKAHEAD_SCHEDULES = ("constant", "cubic")

# model keyword arguments and the config fields that carry them (the original's flags)
MODEL_KWARGS = (
    "depth",
    "block_name",
    "cardinality",
    "widen_factor",
    "growth_rate",
    "compression_rate",
    "drop_rate",
    "base_width",
)


@dataclass
class TrainConfig:
    # data
    dataset: str = "cifar10"
    data_dir: str | None = None
    download: bool = False
    val_split: int = 0
    train_subset: int = 0  # train on a seeded random subset of N images (0: all)
    test_subset: int = 0  # evaluate on the first N test images (0: all)
    workers: int = 4
    # image folders (--dataset imagenet): RandomResizedCrop(train_size); Resize(val_resize) + CenterCrop(val_size)
    train_size: int = 224
    val_size: int = 224
    val_resize: int = 256
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop's area range
    # the decoded image store (data/store.py): auto = built once in the cache folder and reused;
    # off = decode the JPEGs in worker processes every epoch; anything else: the store's path
    store: str = "auto"
    store_max_size: int = 0  # shorter side of the stored images; 0: max(val_resize, train_size)
    # model (the original's family flags; None = the model's own default)
    arch: str = "resnet20"
    depth: int | None = None
    block_name: str | None = None
    cardinality: int | None = None
    widen_factor: int | None = None
    growth_rate: int | None = None
    compression_rate: int | None = None
    drop_rate: float | None = None
    base_width: int | None = None
    pretrained: bool = False  # start from torchvision's ImageNet weights in the local torch hub cache
    # schedule
    epochs: int = 300
    start_epoch: int = 0
    train_batch: int = 128  # global: split evenly over processes
    test_batch: int = 100
    lr: float = 0.1
    lr_schedule: str = "step"  # step | cosine | onecycle | flatcos
    schedule: list[int] = field(default_factory=lambda: [150, 225])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    final_lr_factor: float = 0.0  # cosine/onecycle/flatcos end at lr * this
    anneal_start: float = 0.75  # flatcos: the fraction of the run after which the cosine decay starts
    # optimizer and loss
    optimizer: str = "sgd"  # sgd | adamw | radam (decoupled weight decay for both Adam kinds) | muon
    muon_lr: float = 0.24  # muon: the convolution filters' rate (the other parameters: SGD at lr)
    muon_momentum: float = 0.6  # muon: the filters' (Nesterov) momentum
    # muon: the Newton-Schulz iteration's dtype; fp32, or auto: the run's autocast dtype (bf16 where
    # it autocasts in bf16, so native bf16 only; float32 elsewhere)
    muon_ns_dtype: str = "fp32"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw/radam
    adam_eps: float = 1e-8
    lookahead_k: int = 0  # > 0: Lookahead (engine/optim.py) every k steps; radam + lookahead = "Ranger"
    lookahead_alpha: float = 0.5
    # constant: alpha at every sync; cubic (airbench94's): 1 - (1 - alpha) * (t / T)^3 at step t of T,
    # no averaging at the start, --lookahead-alpha at the end
    lookahead_schedule: str = "constant"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_wd_norm_bias: bool = False
    bias_lr_scale: float = 1.0  # lr multiplier of biases and norm parameters (decay divided by it)
    whiten_bias_epochs: float = 0.0  # > 0: the whitening layer's bias trains only this long (its rate 1 -> 0)
    label_smoothing: float = 0.0
    mixup: float = 0.0  # > 0: mixup (Zhang et al., 2018) with lambda ~ Beta(mixup, mixup), one per batch
    ema_decay: float = 0.0  # > 0: evaluate an exponential moving average of the weights (engine/ema.py)
    ema_every: int = 1  # optimizer steps between EMA updates
    # augmentation (batched, on the device)
    crop_padding: int = 4
    flip: bool = True
    flip_alternate: bool = False  # each image mirrored in every other epoch (its first epoch drawn at random)
    cutout: int = 0
    train_crop: int = 0  # train on random CxC windows (evaluation stays at the full size); 0: off
    tta_flip: bool = False
    tta_shift: int = 0  # test-time augmentation: also views translated by this many pixels
    tta_below: float = 0.0  # selective TTA: extra views only for images whose top probability is below this
    tta_epochs: str = "all"  # all: TTA in every epoch's evaluation | last: only in the last epoch's
    eval_every: int = 1  # evaluate after every Nth epoch and after the last (the others only train)
    # progressive resizing (FFCV-style): train at min_train_size at epoch res_ramp[0], growing
    # linearly to the full size at epoch res_ramp[1]; evaluation is always at the full size
    min_train_size: int = 0  # 0: off
    res_ramp: list[float] = field(default_factory=lambda: [0.0, 0.0])
    # speed
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto | off | bf16 | fp16
    channels_last: str = "auto"  # auto | on | off
    compile: bool = False
    threads: int = 0  # 0: torch's default
    malloc: str = "auto"  # auto: keep step buffers in the heap (glibc, see engine/runtime.py) | off
    gpu_id: str | None = None
    # run
    checkpoint: str | None = None  # default checkpoints/<dataset>/<arch>
    resume: str = ""
    evaluate: bool = False
    seed: int | None = None
    log_interval: float = 10.0  # seconds between plain progress lines
    tensorboard: bool = True
    plot: bool = True
    skip_nonfinite: int = 0
    dist_backend: str = "auto"
    sync_bn: bool = False
    recipe: str | None = None

    def model_kwargs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in MODEL_KWARGS if getattr(self, k) is not None}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def run_dir(self) -> Path:
        return Path(self.checkpoint or f"checkpoints/{self.dataset}/{self.arch}")


FIELD_NAMES = {f.name for f in fields(TrainConfig)}

# the original imagenet.py's defaults, where they differ from cifar.py's; used for --dataset imagenet
# when neither a flag nor the recipe gives the key
IMAGENET_DEFAULTS = {"train_batch": 256, "test_batch": 200, "weight_decay": 1e-4, "epochs": 90}


def _packaged_recipes() -> dict[str, Traversable]:
    """The packaged recipes by name: the file's path under recipes/ without .yaml, with "/" between
    folders (`cifar10-resnet20`, `original/cifar10-resnet110`)."""
    found: dict[str, Traversable] = {}

    def walk(folder: Traversable, prefix: str) -> None:
        for p in folder.iterdir():
            if p.is_dir():
                walk(p, f"{prefix}{p.name}/")
            elif p.name.endswith(RECIPE_SUFFIX) and p.is_file():
                found[prefix + p.name[: -len(RECIPE_SUFFIX)]] = p

    folder = resources.files(RECIPE_PACKAGE) / RECIPE_FOLDER
    if folder.is_dir():
        walk(folder, "")
    return found


def find_recipe(name: str) -> Path | Traversable:
    """The recipe file that `--recipe NAME` means.

    A name ending in .yaml or .yml, or naming an existing path, is a file path (relative to the
    current directory); anything else is the name of a packaged recipe (`list_recipes()`). The
    result is a pathlib.Path for a file path, and an importlib.resources Traversable for a packaged
    recipe (a Path too when the package is installed as plain files): use its read_text().
    Raises UserError for a missing file or an unknown name (the message lists the known names)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"recipe file {name} not found")
        return path
    packaged = _packaged_recipes()
    if name in packaged:
        return packaged[name]
    raise UserError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(packaged)) or 'none found'}")


def _read_recipe(path: Path | Traversable) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise UserError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of config keys to values")
    return data


def _one_line(text: Any) -> str:
    """The first line of a description, cut at the end of its first sentence."""
    lines = [line.strip() for line in str(text).strip().splitlines()]
    first = lines[0] if lines else ""
    end = first.find(". ")
    return (first[: end + 1] if end >= 0 else first).strip()


def list_recipes() -> list[tuple[str, str]]:
    """(name, one-line description) of every packaged recipe, sorted by name; the description is
    the first line (first sentence) of the recipe's `description:` key, "" where it has none."""
    return sorted(
        (name, _one_line(_read_recipe(path).get("description") or "")) for name, path in _packaged_recipes().items()
    )


def load_recipe(name: str) -> dict[str, Any]:
    """The config keys of recipe `name` (see find_recipe), without its description and result."""
    path = find_recipe(name)
    data = _read_recipe(path)
    data = {k.replace("-", "_"): v for k, v in data.items() if k not in ("description", "result")}
    unknown = sorted(set(data) - FIELD_NAMES)
    if unknown:
        raise UserError(f"recipe {path}: unknown keys {', '.join(unknown)}")
    return data


def build_config(overrides: dict[str, Any], recipe: str | None = None) -> TrainConfig:
    """Defaults, then the recipe, then the flags the user gave (`overrides`)."""
    values: dict[str, Any] = {}
    if recipe is None and "arch" not in overrides and "dataset" not in overrides:
        recipe = MAIN_RECIPE  # `torchcls train` alone: the main job
    if recipe is not None:
        values.update(load_recipe(recipe))
        values["recipe"] = recipe
    if "epochs" in overrides and "epochs" in values:
        _rescale_epochs(values, overrides)
    values.update(overrides)
    explicit = set(values)
    if is_folder_dataset(values.get("dataset", TrainConfig.dataset)):
        values = {**{k: v for k, v in IMAGENET_DEFAULTS.items() if k not in values}, **values}
    cfg = TrainConfig(**values)
    validate(cfg, explicit=explicit)
    return cfg


def _rescale_epochs(values: dict[str, Any], overrides: dict[str, Any]) -> None:
    """A recipe's epoch-counted settings in a run whose length --epochs changes (each only where
    the user did not set it too): the warm-up and the early-only whitening bias keep their share
    of the run (never longer than the recipe's own); step-schedule milestones keep their share
    (rounded, at least 1, distinct, before the end; none in a 1-epoch run); an evaluation only at
    the end stays so."""
    old, new = max(1, values["epochs"]), overrides["epochs"]
    for key in ("warmup_epochs", "whiten_bias_epochs"):
        if key in values and key not in overrides:
            values[key] = min(values[key], values[key] / old * new)
    if "schedule" in values and "schedule" not in overrides:  # a 1-epoch run has no room for a milestone
        kept = {min(new - 1, max(1, round(m * new / old))) for m in values["schedule"]}
        values["schedule"] = sorted(kept) if new > 1 else []
    if values.get("eval_every") == old and "eval_every" not in overrides:
        values["eval_every"] = max(1, new)


def validate(cfg: TrainConfig, explicit: set[str] = frozenset()) -> None:
    """Fail before any work starts, with one line naming the valid choices."""

    def bad(msg):
        raise UserError(msg)

    if cfg.epochs < 1:
        bad(f"--epochs must be at least 1, got {cfg.epochs}")
    if not 0 <= cfg.start_epoch < cfg.epochs:
        bad(f"--start-epoch must be in [0, {cfg.epochs}), got {cfg.start_epoch}")
    if cfg.train_batch < 1 or cfg.test_batch < 1:
        bad("--train-batch and --test-batch must be positive")
    if cfg.lr <= 0:
        bad(f"--lr must be positive, got {cfg.lr}")
    if cfg.lr_schedule not in ("step", "cosine", "onecycle", "flatcos"):
        bad(f"--lr-schedule must be step, cosine, onecycle or flatcos, got {cfg.lr_schedule!r}")
    if not 0 <= cfg.anneal_start < 1:
        bad(f"--anneal-start must be a fraction in [0, 1), got {cfg.anneal_start}")
    if cfg.optimizer not in OPTIMIZERS:
        bad(f"--optimizer must be {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas) or cfg.adam_eps <= 0:
        bad(f"--betas must be two numbers in [0, 1) and --adam-eps positive, got {cfg.betas} and {cfg.adam_eps}")
    if cfg.lookahead_schedule not in LOOKAHEAD_SCHEDULES:
        bad(f"--lookahead-schedule must be {' or '.join(LOOKAHEAD_SCHEDULES)}, got {cfg.lookahead_schedule!r}")
    if cfg.lookahead_schedule == "cubic" and cfg.lookahead_k <= 0:
        bad("--lookahead-schedule cubic needs --lookahead-k K (the steps between syncs, airbench: 5)")
    if cfg.lookahead_k < 0 or not 0 < cfg.lookahead_alpha <= 1:
        bad(
            f"--lookahead-k must be >= 0 and --lookahead-alpha in (0, 1], "
            f"got {cfg.lookahead_k} and {cfg.lookahead_alpha}"
        )
    if cfg.lr_schedule == "step" and "schedule" in explicit:  # the default 150 225 may lie past a short run
        late = [e for e in cfg.schedule if e >= cfg.epochs or e < 0]
        if late:
            bad(
                f"--schedule epochs {late} are outside the run of {cfg.epochs} epochs (0..{cfg.epochs - 1}); "
                "lower them or raise --epochs"
            )
    if cfg.warmup_epochs < 0 or cfg.warmup_epochs >= cfg.epochs:
        bad(f"--warmup-epochs must be in [0, {cfg.epochs}), got {cfg.warmup_epochs}")
    if cfg.min_train_size < 0 or len(cfg.res_ramp) != 2 or cfg.res_ramp[0] > cfg.res_ramp[1]:
        bad("--min-train-size must be >= 0 and --res-ramp two epochs START END with START <= END")
    if cfg.amp not in ("auto", "off", "bf16", "fp16"):
        bad(f"--amp must be auto, off, bf16 or fp16, got {cfg.amp!r}")
    if cfg.channels_last not in ("auto", "on", "off"):
        bad(f"--channels-last must be auto, on or off, got {cfg.channels_last!r}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        bad(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    if cfg.val_split < 0 or cfg.train_subset < 0 or cfg.test_subset < 0:
        bad("--val-split, --train-subset and --test-subset must be >= 0")
    if not 0 <= cfg.label_smoothing < 1:
        bad(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.mixup < 0:
        bad(f"--mixup must be >= 0 (0: off), got {cfg.mixup}")
    if cfg.weight_decay < 0 or cfg.momentum < 0:
        bad("--wd and --momentum must be >= 0")
    if min(cfg.train_size, cfg.val_size, cfg.val_resize) < 1:
        bad("--train-size, --val-size and --val-resize must be positive")
    if len(cfg.crop_scale) != 2 or not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
        bad(f"--crop-scale must be two fractions 0 < MIN <= MAX <= 1, got {cfg.crop_scale}")
    if cfg.store_max_size < 0:
        bad(f"--store-max-size must be >= 0 (0: the larger of --val-resize and --train-size), got {cfg.store_max_size}")
    if cfg.workers < 0:
        bad(f"-j/--workers must be >= 0, got {cfg.workers}")
    if cfg.tta_shift < 0 or cfg.tta_epochs not in ("all", "last"):
        bad("--tta-shift must be >= 0 and --tta-epochs all or last")
    if not 0 <= cfg.tta_below <= 1:
        bad(f"--tta-below must be a probability in [0, 1] (0: every image gets all views), got {cfg.tta_below}")
    if cfg.eval_every < 1:
        bad(f"--eval-every must be at least 1, got {cfg.eval_every}")
    if not 0 <= cfg.ema_decay < 1 or cfg.ema_every < 1:
        bad(f"--ema-decay must be in [0, 1) and --ema-every at least 1, got {cfg.ema_decay} and {cfg.ema_every}")
    if cfg.muon_ns_dtype not in MUON_NS_DTYPES:
        bad(f"--muon-ns-dtype must be {' or '.join(MUON_NS_DTYPES)}, got {cfg.muon_ns_dtype!r}")
    if cfg.muon_lr <= 0 or not 0 <= cfg.muon_momentum < 1:
        bad(f"--muon-lr must be positive and --muon-momentum in [0, 1), got {cfg.muon_lr} and {cfg.muon_momentum}")
    if cfg.whiten_bias_epochs < 0:
        bad(f"--whiten-bias-epochs must be >= 0 (0: trained throughout), got {cfg.whiten_bias_epochs}")
    if cfg.flip_alternate and (not cfg.flip or is_folder_dataset(cfg.dataset)):
        bad("--flip-alternate needs --flip on and an in-memory data set (cifar10, cifar100, fashion-mnist)")
    if cfg.bias_lr_scale <= 0:
        bad(f"--bias-lr-scale must be positive, got {cfg.bias_lr_scale}")
    if cfg.malloc not in ("auto", "off"):
        bad(f"--malloc must be auto or off, got {cfg.malloc!r}")
    cfg.dataset = canonical_name(cfg.dataset)
    check_model(cfg)


def check_model(cfg: TrainConfig) -> None:
    """Build the model on the meta device (no memory, no time) so that an unknown name or an
    impossible depth fails before any data is read."""
    try:
        with torch.device("meta"):
            create_model(cfg.arch, num_classes=10, **cfg.model_kwargs())
    except ValueError as e:
        raise UserError(str(e)) from None
    if cfg.pretrained:  # the weights file must be at hand before any data is read
        pretrained_file(cfg.arch, cfg.model_kwargs())


def save_yaml(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
