"""A run built in one place: device, precision, memory format, model, EMA, optimizer, schedule,
scaler, criterion and the training step. `torchcls train`, `bench` and `eval` all build from here,
so the step bench times is the step train runs.

The `auto` rules (measured in docs/RESULTS.md):
- precision: bfloat16 autocast on CUDA devices with bf16 (else float16 with a scaler) and on CPUs
  with native bf16 instructions (AVX512-BF16 or AMX); float32 elsewhere: on AVX2-only CPUs bf16 is
  emulated, several times slower than float32.
- memory format: channels_last (oneDNN's and cuDNN's fast convolution layout).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn as nn

from torchcls import __version__
from torchcls.config import MODEL_KWARGS, TrainConfig
from torchcls.engine.distributed import SINGLE, DistInfo
from torchcls.engine.ema import ModelEma
from torchcls.engine.optim import build_optimizer, build_scheduler
from torchcls.engine.runtime import compile_model, malloc_state
from torchcls.engine.step import TrainStep, prepare
from torchcls.errors import UserError
from torchcls.models import create_model, input_channels
from torchcls.models.imagenet.pretrained import load_pretrained
from torchcls.models.weights import load_model_weights

# ----------------------------------------------------------------------------- the machine


def resolve_device(device: str = "auto", gpu_id: str | None = None) -> torch.device:
    """auto: the local GPU when there is one, else the CPU; cuda without a GPU is a UserError."""
    if gpu_id is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


@cache
def _cpuinfo_field(key: str) -> str | None:
    """The first `key: value` of /proc/cpuinfo (Linux), or None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> frozenset[str]:
    return frozenset((_cpuinfo_field("flags") or "").split())


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def isa_caps() -> dict[str, str]:
    """The caps this process put on its CPU kernels: oneDNN's (convolutions) and ATen's (the rest)."""
    caps = {
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
    }
    return {name: value for name, value in caps.items() if value}


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below which its convolutions have no native bf16
_NO_BF16_ISAS = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def cpu_has_bf16() -> bool:
    """Native bfloat16 arithmetic: the CPU has AVX512-BF16 or AMX (Linux /proc/cpuinfo; False
    elsewhere) and the process has not capped its kernels below them (isa_caps)."""
    caps = isa_caps()
    if caps.get("ONEDNN_MAX_CPU_ISA", "").upper() in _NO_BF16_ISAS:
        return False
    if caps.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2"):
        return False
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_isa() -> str:
    """The vector instruction sets that decide CPU speed here, e.g. 'AVX512-BF16, AMX' or 'AVX2'."""
    f = cpu_flags()
    parts = [
        name
        for flag, name in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX"))
        if flag in f
    ]
    if not parts:
        parts = ["AVX2"] if "avx2" in f else ([platform.machine()] if platform.machine() else [])
    if not parts:
        return "unknown"
    caps = ", ".join(f"{name}={value}" for name, value in isa_caps().items())
    return ", ".join(parts) + (f"; capped by {caps}" if caps else "")


_warned_bf16 = False


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --amp `amp` on `device` (None: float32); the rules are above."""
    global _warned_bf16
    if amp == "off":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise UserError("--amp fp16 needs a CUDA device; on a CPU use --amp bf16 or off")
        return torch.float16
    if amp == "bf16":
        if device.type == "cpu" and not cpu_has_bf16() and not _warned_bf16:
            _warned_bf16 = True
            print(
                f"torchcls: warning: --amp bf16 without native bf16 on this CPU ({cpu_model()}; {cpu_isa()}) is "
                "emulated, several times slower than float32; use --amp auto or off",
                file=sys.stderr,
            )
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def resolve_channels_last(channels_last: str, device: torch.device) -> bool:
    return channels_last != "off"


def amp_name(amp_dtype: torch.dtype | None) -> str:
    return str(amp_dtype).replace("torch.", "") if amp_dtype else "off"


def hardware_summary(device: torch.device, world_size: int) -> dict:
    out = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "world_size": world_size,
        "torch": torch.__version__,
        "torchcls": __version__,
        "python": platform.python_version(),
        "malloc": malloc_state(),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


# ----------------------------------------------------------------------------- the model


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int | None = None) -> nn.Module:
    kwargs = cfg.model_kwargs()
    own_pretrained = cfg.pretrained and not cfg.arch.startswith("tv_")
    if cfg.pretrained and not own_pretrained:
        kwargs["pretrained"] = True  # torchvision builders load their cached weights themselves
    try:
        model = create_model(cfg.arch, num_classes=num_classes, in_channels=in_channels, **kwargs)
    except ValueError as e:
        raise UserError(str(e)) from None
    if own_pretrained:
        load_pretrained(model, cfg.arch, cfg.model_kwargs(), num_classes)
    return model


def init_from_data(model: nn.Module, data, n: int = 5000) -> None:
    """Models with a `data_init(images)` method (SpeedNet's whitening layer) get the first `n`
    normalised training images (the same on every process) before the first step."""
    if not hasattr(model, "data_init"):
        return
    images = getattr(data.train, "images", None)
    if images is None:
        raise UserError(
            "this model sets its first layer from the training images, which needs an in-memory "
            "data set (cifar10, cifar100, fashion-mnist)"
        )
    model.data_init(prepare(images[:n], data.mean, data.std, False, input_channels(model)))


def check_compatible(state: dict, cfg: TrainConfig, num_classes: int, path) -> None:
    """A checkpoint to resume must hold this run's architecture and class count."""
    arch = state.get("arch")
    if arch is not None and arch != cfg.arch:
        kwargs = state.get("model_kwargs") or {}  # what rebuilds the model (as eval does)
        flags = "".join(  # a family entry's own flags too: -a resnet --depth 8
            f" --{'drop' if k == 'drop_rate' else k.replace('_', '-')} {kwargs[k]}"
            for k in MODEL_KWARGS
            if kwargs.get(k) is not None
        )
        raise UserError(
            f"{path} holds a {arch}{flags} model but this run is -a {cfg.arch}; "
            f"pass -a {arch}{flags} or start a new run"
        )
    n = state.get("num_classes")
    if n is not None and n != num_classes:
        raise UserError(
            f"{path} was trained for {n} classes but {cfg.dataset} has {num_classes}; resume on the same data set"
        )
    if state.get("ema") and cfg.ema_decay <= 0:  # evaluating the raw weights would change what "best" means
        saved = (state.get("config") or {}).get("ema_decay")
        raise UserError(
            f"{path} was trained with a weight average (--ema-decay {saved}); "
            "resume it with the same --ema-decay and --ema-every"
        )


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Everything a training process holds. `model` is what runs the step (compiled and/or
    wrapped in DDP); `raw_model` the plain module whose weights are saved."""

    cfg: TrainConfig
    device: torch.device
    dist: DistInfo
    amp_dtype: torch.dtype | None
    channels_last: bool
    raw_model: nn.Module
    model: nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    step: TrainStep

    def eval_model(self) -> nn.Module:
        """The weight average once it has been updated (the same on every process), else the model."""
        if self.ema is None or self.ema.updates == 0:
            return self.model
        self.ema.sync_from_rank0()
        return self.ema.module


def build_run(
    cfg: TrainConfig,
    data,
    device: torch.device,
    dist: DistInfo = SINGLE,
    state: dict | None = None,
    source: str = "",
) -> Run:
    """Build a run for `data` (data/build.py's RunData). With `state` (a checkpoint), the model
    and its weight average start from its weights; the optimizer, schedule, scaler and RNG are
    restored by engine/checkpoint.restore_run."""
    num_classes = len(data.classes)
    amp_dtype = resolve_amp(cfg.amp, device)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    model = build_model(cfg, num_classes, len(data.mean))
    if state is not None:
        check_compatible(state, cfg, num_classes, source)
        load_model_weights(model, state["state_dict"], source)
    model = model.to(device)
    if state is None:
        init_from_data(model, data)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if dist.enabled and cfg.sync_bn:
        if device.type != "cuda":  # DDP refuses SyncBatchNorm on CPU modules
            raise UserError(
                "--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm works only on GPUs); on "
                "CPUs each process normalises with its own share of the batch: drop --sync-bn"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    raw_model = model
    ema = ModelEma(raw_model, cfg.ema_decay, cfg.ema_every) if cfg.ema_decay > 0 else None
    optimizer = build_optimizer(raw_model, cfg, cfg.epochs * len(data.train), amp_dtype)
    scheduler = build_scheduler(optimizer, len(data.train), cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if cfg.compile:
        model = compile_model(model, device.type)
    if dist.enabled:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step = TrainStep(
        model,
        optimizer,
        scheduler,
        scaler,
        criterion,
        data.augment,
        data.mean,
        data.std,
        device,
        amp_dtype,
        channels_last,
        ema=ema,
        ema_source=raw_model,
        channels=input_channels(raw_model),
        mixup=cfg.mixup,
    )
    return Run(
        cfg,
        device,
        dist,
        amp_dtype,
        channels_last,
        raw_model,
        model,
        ema,
        optimizer,
        scheduler,
        scaler,
        criterion,
        step,
    )
