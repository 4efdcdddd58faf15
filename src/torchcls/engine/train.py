"""The training run: one place that runs an epoch, and the run around it.

dataset (uint8 tensor on the device) -> loader (this rank's share, this epoch's order) ->
augmentation on the device -> model (channels_last, autocast) -> loss -> optimizer step ->
metrics reduced across ranks -> reporters -> checkpoint.
"""
from __future__ import annotations

import json
import os
import platform
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchcls import __version__
from torchcls.config import TrainConfig, save_yaml
from torchcls.data.build import build_data
from torchcls.engine import checkpoint as ckpt_io
from torchcls.engine.distributed import (all_reduce_sum, barrier, broadcast_object, gather_objects,
                                         init_distributed, shutdown)
from torchcls.engine.ema import ModelEma
from torchcls.engine.evaluate import autocast_ctx, evaluate, prepare
from torchcls.engine.optim import build_optimizer, build_scheduler
from torchcls.engine.runtime import compile_model, malloc_state, tune_malloc
from torchcls.errors import Interrupted, UserError
from torchcls.models import create_model
from torchcls.report.logger import RunLogger
from torchcls.report.progress import Progress


class NonFiniteLoss(UserError):
    pass


# ----------------------------------------------------------------------------- set-up helpers

def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.gpu_id is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = cfg.gpu_id
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """auto: bf16 where the hardware has it (CUDA with bf16, CPUs with AVX512-BF16/AMX), else off.
    The benchmark (docs/RESULTS.md) is what this default rests on."""
    if cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        if device.type != "cuda":
            raise UserError("--amp fp16 needs a CUDA device; on a CPU use --amp bf16 or off")
        return torch.float16
    if cfg.amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def resolve_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.channels_last != "auto":
        return cfg.channels_last == "on"
    return True


def hardware_summary(device: torch.device, world_size: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"device": device.type, "cpu": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "world_size": world_size, "torch": torch.__version__, "torchcls": __version__,
           "python": platform.python_version(), "malloc": malloc_state()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    kwargs = cfg.model_kwargs()
    own_pretrained = cfg.pretrained and not cfg.arch.startswith("tv_")
    if cfg.pretrained and not own_pretrained:
        kwargs["pretrained"] = True  # torchvision builders load their cached weights themselves
    try:
        model = create_model(cfg.arch, num_classes=num_classes, **kwargs)
    except ValueError as e:
        raise UserError(str(e)) from None
    if own_pretrained:
        from torchcls.models.imagenet.pretrained import load_pretrained

        load_pretrained(model, cfg.arch, cfg.model_kwargs(), num_classes)
    return model


def _rng_state(device: torch.device) -> dict:
    st = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
          "python_pos": random.getstate()[2]}
    if device.type == "cuda":
        st["cuda"] = torch.cuda.get_rng_state(device)
    return st


def _set_rng_state(st: dict, device: torch.device) -> None:
    torch.set_rng_state(st["torch"])
    if "python" in st:
        random.setstate((3, tuple(st["python"]), st.get("python_pos")))
    if device.type == "cuda" and "cuda" in st:
        torch.cuda.set_rng_state(st["cuda"], device)


def train_size_at(epoch: int, full: int, cfg: TrainConfig) -> int:
    """Progressive resizing: the training image size of `epoch` (0-based), a multiple of 4."""
    if not cfg.min_train_size or cfg.min_train_size >= full:
        return full
    start, end = cfg.res_ramp
    t = 1.0 if epoch >= end else 0.0 if epoch <= start else (epoch - start) / (end - start)
    size = cfg.min_train_size + t * (full - cfg.min_train_size)
    return min(full, int(round(size / 4)) * 4)


# Test hooks, read from the environment; both do nothing unless set.
# DUMP_WEIGHTS_ENV=DIR: every rank saves its final state_dict as DIR/rank<R>.pt and its final metrics
# as DIR/rank<R>.json (to compare ranks).
# CRASH_ENV=N: the last rank exits with status 1 after epoch N, on a job's first attempt only
# (TORCHELASTIC_RESTART_COUNT 0), to exercise `torchrun --max-restarts` with `--resume auto`.
DUMP_WEIGHTS_ENV = "TORCHCLS_TEST_DUMP_WEIGHTS"
CRASH_ENV = "TORCHCLS_TEST_CRASH_AFTER_EPOCH"


def _test_crash_hook(epochs_done: int, dist) -> None:
    at = os.environ.get(CRASH_ENV)
    if (at and int(at) == epochs_done and dist.rank == dist.world_size - 1
            and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"):
        print(f"torchcls: {CRASH_ENV}={at}: rank {dist.rank} exits on purpose", file=sys.stderr, flush=True)
        os._exit(1)


def init_from_data(model: nn.Module, data, n: int = 5000) -> None:
    """Models with a `data_init(images)` method (SpeedNet's whitening layer) get the first `n`
    normalised training images (the same on every process) before the first step."""
    if not hasattr(model, "data_init"):
        return
    images = getattr(data.train, "images", None)
    if images is None:
        raise UserError("this model sets its first layer from the training images, which needs an in-memory "
                        "data set (cifar10, cifar100, fashion-mnist)")
    model.data_init(prepare(images[:n], data.mean, data.std, False))


def train_inputs(x, augment, gen, mean, std, channels_last: bool, size: int | None = None) -> torch.Tensor:
    """A uint8 batch on the device -> augmented, normalised model input, resized to `size`
    (progressive resizing) when that differs from the batch's own size."""
    x = prepare(augment(x, gen), mean, std, channels_last)
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def forward_loss(model, x, y, criterion, device: torch.device, amp_dtype):
    """Logits and loss under autocast (the loss in float32)."""
    with autocast_ctx(device, amp_dtype):
        out = model(x)
        loss = criterion(out.float(), y)
    return out, loss


def optimizer_step(loss, optimizer, scaler) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


# ----------------------------------------------------------------------------- the run

@dataclass
class EpochStats:
    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    skipped: int = 0
    lr: float | None = None  # the rate at the epoch's start (log.txt's), kept across a mid-epoch resume


class Trainer:
    def __init__(self, cfg: TrainConfig, log=print, on_epoch_end=None):
        self.cfg = cfg
        self.log = log
        self.on_epoch_end = on_epoch_end  # called with (epoch, row) after the epoch's checkpoint
        self.stop_signal = None

    def run(self) -> dict:
        cfg = self.cfg
        t_start = time.time()
        self.device = device = resolve_device(cfg)
        self.dist = init_distributed(device.type, cfg.dist_backend)
        self._old_handlers = {}
        threads = torch.get_num_threads()
        try:
            return self._run(t_start)
        finally:  # leave the process as it was (tests and notebooks run several trainings in one)
            torch.set_num_threads(threads)
            for sig, h in self._old_handlers.items():
                signal.signal(sig, h)
            shutdown()

    def _run(self, t_start: float) -> dict:
        cfg, device, dist = self.cfg, self.device, self.dist
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        tune_malloc(cfg.malloc)
        amp_dtype = resolve_amp(cfg, device)
        channels_last = resolve_channels_last(cfg, device)
        run_dir = cfg.run_dir()
        main = dist.is_main

        # resume: find the checkpoint before anything else, so a bad path fails at once
        resume_path = None
        if cfg.resume == "auto":
            resume_path = ckpt_io.find_resume(run_dir)
        elif cfg.resume:
            resume_path = Path(cfg.resume)
        if dist.enabled:  # every rank must continue from the same checkpoint (a shared run folder)
            seen = gather_objects(str(resume_path) if resume_path else None, dist)
            if len(set(seen)) > 1:
                raise UserError(f"the processes found different checkpoints to resume from ({seen}); the run "
                                f"folder {run_dir} must be the same (shared) folder on every machine")
        state = ckpt_io.safe_load(resume_path) if resume_path else None
        # the seed: given, else the resumed run's own (its data order continues), else a fresh one
        seed = cfg.seed if cfg.seed is not None else (state or {}).get("seed")
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        self.seed = seed = broadcast_object(int(seed), dist)
        torch.manual_seed(seed)
        random.seed(seed)

        data = build_data(cfg, seed, dist.rank, dist.world_size, device)
        num_classes = len(data.classes)
        mean, std, select_name = data.mean, data.std, data.select_name

        model = build_model(cfg, num_classes)
        if state is not None:
            self._check_compatible(state, num_classes, resume_path)
            ckpt_io.load_model_weights(model, state["state_dict"], str(resume_path))
        model = model.to(device)
        if state is None:
            init_from_data(model, data)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        if dist.enabled and cfg.sync_bn:
            if device.type != "cuda":  # DDP refuses SyncBatchNorm on CPU modules
                raise UserError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm works only on GPUs); on "
                                "CPUs each process normalises with its own share of the batch: drop --sync-bn")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        raw_model = model
        ema = ModelEma(raw_model, cfg.ema_decay, cfg.ema_every) if cfg.ema_decay > 0 else None
        if state is not None and state.get("ema"):
            if ema is None:  # evaluating the raw weights from here on would change what "best" means
                saved = (state.get("config") or {}).get("ema_decay")
                raise UserError(f"{resume_path} was trained with a weight average (--ema-decay {saved}); "
                                f"resume it with the same --ema-decay and --ema-every")
            ema.load_state_dict(state["ema"])
        if cfg.tta_shift >= data.input_size:
            raise UserError(f"--tta-shift {cfg.tta_shift} must be smaller than the {data.input_size}-pixel images")

        local_batch = cfg.train_batch // dist.world_size
        loader = data.train
        steps_per_epoch = len(loader)
        optimizer = build_optimizer(raw_model, cfg)
        scheduler = build_scheduler(optimizer, steps_per_epoch, cfg)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        augment = data.augment

        start_epoch, start_batch, best_acc = cfg.start_epoch, 0, 0.0
        partial = EpochStats()
        aug_state = None
        if state is not None:
            start_epoch, start_batch = int(state["epoch"]), int(state.get("batch", 0))
            best_acc = float(state.get("best_acc", 0.0))
            if "optimizer" in state and state["optimizer"]:
                try:
                    optimizer.load_state_dict(state["optimizer"])
                except ValueError as e:  # e.g. parameter groups changed by --no-wd-norm-bias/--bias-lr-scale
                    raise UserError(f"{resume_path}: its optimizer state does not fit this run's parameter groups "
                                    f"({e}); resume with the run's own --no-wd-norm-bias and --bias-lr-scale") from None
            if state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            else:  # an original pytorch-classification checkpoint: rebuild the schedule position
                scheduler.last_epoch = start_epoch * steps_per_epoch - 1
                scheduler.step()
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if state.get("rng"):
                _set_rng_state(state["rng"], device)
            if state.get("partial"):
                partial = EpochStats(**state["partial"])
            aug_state = state.get("aug_rng")
            if start_epoch >= cfg.epochs:
                raise UserError(f"{resume_path} has already finished {start_epoch} epochs; raise --epochs "
                                f"to train further")

        if cfg.compile:
            model = compile_model(model, device.type)
        if dist.enabled:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)

        def eval_model():  # the average once it has been updated (the same on every process), else the model
            if ema is None or ema.updates == 0:
                return model
            ema.sync_from_rank0()
            return ema.module

        logger = None
        if main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, run_dir / "config.yaml")
            logger = RunLogger(run_dir, resume=state is not None, tensorboard=cfg.tensorboard, plot=cfg.plot)
            if state is not None:
                logger.truncate_after(start_epoch)
            self.log(f"torchcls: training {cfg.arch} on {cfg.dataset} ({data.train_size} train / "
                     f"{data.select_size} {select_name} images, {num_classes} classes) for {cfg.epochs} epochs "
                     f"on {device.type}" + (f" x {dist.world_size} processes" if dist.enabled else "")
                     + f"; batch {cfg.train_batch} global ({local_batch} per process), seed {seed}, "
                     f"amp {str(amp_dtype).replace('torch.', '') if amp_dtype else 'off'}, "
                     f"channels_last {'on' if channels_last else 'off'}")
            if resume_path:
                self.log(f"torchcls: resumed from {resume_path} at epoch {start_epoch}"
                         + (f", batch {start_batch}" if start_batch else ""))
            elif cfg.resume == "auto":
                self.log(f"torchcls: --resume auto: no checkpoint in {run_dir} yet, starting a new run")
            self.log(f"torchcls: outputs in {run_dir}/")

        self._old_handlers = self._install_signal_handlers()
        data_cfg = {"arch": cfg.arch, "model_kwargs": cfg.model_kwargs(), "num_classes": num_classes,
                    "classes": list(data.classes), "mean": list(mean), "std": list(std),
                    "input_size": data.input_size, "dataset": cfg.dataset}

        def make_state(epoch, batch, acc, stats: EpochStats | None, aug_gen):
            return {"epoch": epoch, "batch": batch, "state_dict": raw_model.state_dict(), "acc": acc,
                    "best_acc": best_acc, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "rng": _rng_state(device), "aug_rng": aug_gen.get_state() if aug_gen is not None else None,
                    "partial": vars(stats).copy() if stats is not None else None,
                    "seed": seed, "config": cfg.to_dict(), **data_cfg, "torchcls_version": __version__,
                    "ema": ema.state_dict() if ema is not None else None}

        select_loader = data.select
        eval_kw = dict(mean=mean, std=std, device=device, amp_dtype=amp_dtype, channels_last=channels_last,
                       tta_flip=cfg.tta_flip, tta_shift=cfg.tta_shift, dist_info=dist)
        plain_eval_kw = {**eval_kw, "tta_flip": False, "tta_shift": 0}  # --tta-epochs last: the others

        total_images, total_train_time = 0, 0.0
        row = {}
        for epoch in range(start_epoch, cfg.epochs):
            loader.set_epoch(epoch)
            gen = torch.Generator(device=device)
            if aug_state is not None and start_batch:
                gen.set_state(aug_state)
            else:
                gen.manual_seed((seed * 7919 + epoch) * 131 + dist.rank)
            stats = partial if start_batch else EpochStats()
            size = train_size_at(epoch, data.train_input_size or data.input_size, cfg)
            lr_now = stats.lr if start_batch and stats.lr is not None else optimizer.param_groups[0]["lr"]
            stats.lr = lr_now
            progress = Progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", cfg.log_interval,
                                enabled=main, initial=start_batch)
            t0 = time.perf_counter()
            model.train()
            batch_i = start_batch
            for x, y in loader.iterate(start_batch):
                x = train_inputs(x, augment, gen, mean, std, channels_last, size)
                out, loss = forward_loss(model, x, y, criterion, device, amp_dtype)
                if not torch.isfinite(loss):
                    stats.skipped += 1
                    if stats.skipped > cfg.skip_nonfinite:
                        progress.close()
                        step = epoch * steps_per_epoch + batch_i
                        last = run_dir / ckpt_io.LAST
                        kept = (f"the last good checkpoint, {last}, is kept" if last.is_file()
                                else "no checkpoint was written yet")
                        raise NonFiniteLoss(
                            f"the loss became {loss.item()} at step {step} (epoch {epoch + 1}, batch {batch_i}); "
                            f"{kept}. Try a lower --lr, --amp off, "
                            f"or --skip-nonfinite N to tolerate N such steps")
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                else:
                    optimizer_step(loss, optimizer, scaler)
                    scheduler.step()
                    if ema is not None:
                        ema.step(raw_model)
                    n = y.numel()
                    stats.loss_sum += loss.item() * n
                    stats.correct += (out.argmax(1) == y).sum().item()
                    stats.count += n
                batch_i += 1
                progress.update(1, loss=f"{stats.loss_sum / max(1, stats.count):.4f}",
                                acc=f"{100 * stats.correct / max(1, stats.count):.2f}%",
                                lr=f"{optimizer.param_groups[0]['lr']:.4g}",
                                img_s=f"{(batch_i - start_batch) * cfg.train_batch / (time.perf_counter() - t0):.0f}")
                if self.stop_signal is not None:
                    break
            train_time = time.perf_counter() - t0
            progress.close()
            if self.stop_signal is not None and batch_i < steps_per_epoch:
                if main:
                    ckpt_io.atomic_save(make_state(epoch, batch_i, None, stats, gen), run_dir / ckpt_io.LAST)
                barrier(dist)
                raise Interrupted(f"stopped by {self.stop_signal} at epoch {epoch + 1}, batch {batch_i}; "
                                  f"checkpoint written to {run_dir / ckpt_io.LAST}. Resume with "
                                  f"--resume {run_dir / ckpt_io.LAST} (or --resume auto)")
            images_done = (batch_i - start_batch) * cfg.train_batch
            total_images += images_done
            total_train_time += train_time
            start_batch, aug_state = 0, None
            loss_sum, correct, count = all_reduce_sum([stats.loss_sum, stats.correct, stats.count], device, dist)
            self._report_skipped(loader, "training")

            t1 = time.perf_counter()
            last = epoch == cfg.epochs - 1
            kw = eval_kw if last or cfg.tta_epochs == "all" else plain_eval_kw
            res = evaluate(eval_model(), select_loader, **kw)
            eval_time = time.perf_counter() - t1
            self._report_skipped(select_loader, select_name)
            is_best = res["top1"] > best_acc
            best_acc = max(best_acc, res["top1"])
            row = {"epoch": epoch + 1, "lr": lr_now, "train_loss": loss_sum / max(1, count),
                   "train_acc": 100 * correct / max(1, count), "valid_loss": res["loss"], "valid_acc": res["top1"],
                   "valid_top5": res["top5"], "valid_set": select_name, "best_acc": best_acc,
                   "train_size": size, "train_time": train_time, "eval_time": eval_time,
                   "images_per_s": images_done / train_time if train_time > 0 else 0.0,
                   "skipped_steps": stats.skipped}
            if main:
                epoch_state = make_state(epoch + 1, 0, res["top1"], None, None)
                ckpt_io.atomic_save(epoch_state, run_dir / ckpt_io.LAST)
                if is_best:
                    ckpt_io.atomic_save(epoch_state, run_dir / ckpt_io.BEST)
                logger.log_epoch(row)
                self.log(f"epoch {epoch + 1}/{cfg.epochs}  lr {lr_now:.4g}  train loss {row['train_loss']:.4f} "
                         f"acc {row['train_acc']:.2f}%  {select_name} loss {res['loss']:.4f} top-1 {res['top1']:.2f}% "
                         f"top-5 {res['top5']:.2f}%  best {best_acc:.2f}%  {row['images_per_s']:.0f} img/s  "
                         f"{train_time + eval_time:.0f}s")
            barrier(dist)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch + 1, row)
            _test_crash_hook(epoch + 1, dist)
            if self.stop_signal is not None and epoch + 1 < cfg.epochs:  # after the last one: just finish
                raise Interrupted(f"stopped by {self.stop_signal} after epoch {epoch + 1}; checkpoint in "
                                  f"{run_dir / ckpt_io.LAST}. Resume with --resume auto")

        results = {"dataset": cfg.dataset, "arch": cfg.arch, "epochs": cfg.epochs, "seed": seed,
                   "final": {"top1": row.get("valid_acc"), "top5": row.get("valid_top5"),
                             "loss": row.get("valid_loss"), "set": select_name},
                   "best": {"top1": best_acc, "set": select_name},
                   "wall_time_s": time.time() - t_start,
                   "train_images_per_s": total_images / total_train_time if total_train_time else None,
                   "hardware": hardware_summary(device, dist.world_size), "config": cfg.to_dict()}
        if data.test is not None:  # selection was on held-out data: report the test set too
            results["final_test"] = evaluate(eval_model(), data.test, **eval_kw)
        if os.environ.get(DUMP_WEIGHTS_ENV):  # tests: every rank's final weights, to compare across ranks
            dump = Path(os.environ[DUMP_WEIGHTS_ENV])
            dump.mkdir(parents=True, exist_ok=True)
            torch.save(raw_model.state_dict(), dump / f"rank{dist.rank}.pt")
            (dump / f"rank{dist.rank}.json").write_text(json.dumps({k: results[k] for k in ("final", "best")}))
        if main:
            (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            logger.close()
            self.log(f"torchcls: done in {results['wall_time_s']:.0f}s; final {select_name} top-1 "
                     f"{row.get('valid_acc', float('nan')):.2f}%, best {best_acc:.2f}%; outputs in {run_dir}/ "
                     f"(log.txt, metrics.jsonl, log.png, checkpoint.pth.tar, model_best.pth.tar, results.json)")
        return results

    def _report_skipped(self, loader, what: str) -> None:
        """Name the files the loader could not read this epoch, over all ranks (a collective)."""
        take = getattr(loader, "take_skipped", None)
        if take is None:
            return
        files = [f for part in gather_objects(take(), self.dist) for f in part]
        if files and self.dist.is_main:
            self.log(f"torchcls: skipped {len(files)} unreadable file(s) this epoch ({what}): "
                     + ", ".join(files[:20]) + (f" and {len(files) - 20} more" if len(files) > 20 else ""))

    def _check_compatible(self, state: dict, num_classes: int, path) -> None:
        arch = state.get("arch")
        if arch is not None and arch != self.cfg.arch:
            raise UserError(f"{path} holds a {arch} model but this run is -a {self.cfg.arch}; "
                            f"pass -a {arch} or start a new run")
        n = state.get("num_classes")
        if n is not None and n != num_classes:
            raise UserError(f"{path} was trained for {n} classes but {self.cfg.dataset} has {num_classes}; "
                            "resume on the same data set")

    def _install_signal_handlers(self) -> dict:
        old = {}
        if sys.platform == "win32":
            return old

        def handler(signum, frame):
            if self.stop_signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(signum).name

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
        return old


def train(cfg: TrainConfig, log=print, on_epoch_end=None) -> dict:
    return Trainer(cfg, log, on_epoch_end).run()
