"""The training run: orchestration of the engine's parts.

dataset (uint8 tensor on the device) -> loader (this rank's share, this epoch's order) ->
the step (engine/step.py: augmentation, channels_last, autocast, forward, loss, backward, update)
-> metrics reduced across ranks -> reporters -> checkpoint (engine/checkpoint.py).
"""

from __future__ import annotations

import json
import random
import signal
import sys
import time
from pathlib import Path

import torch

from torchcls import __version__
from torchcls.config import TrainConfig, save_yaml
from torchcls.data.build import build_data
from torchcls.engine import checkpoint as ckpt_io
from torchcls.engine.distributed import (
    all_reduce_sum,
    barrier,
    broadcast_object,
    gather_objects,
    init_distributed,
    shutdown,
)
from torchcls.engine.epoch import EpochStats, NonFiniteLoss, train_epoch
from torchcls.engine.evaluate import evaluate
from torchcls.engine.runtime import tune_malloc
from torchcls.engine.setup import Run, amp_name, build_run, hardware_summary, resolve_device
from torchcls.errors import Interrupted, UserError
from torchcls.report.logger import RunLogger
from torchcls.report.progress import Progress


def train_size_at(epoch: int, full: int, cfg: TrainConfig) -> int:
    """Progressive resizing: the training image size of `epoch` (0-based), a multiple of 4."""
    if not cfg.min_train_size or cfg.min_train_size >= full:
        return full
    start, end = cfg.res_ramp
    t = 1.0 if epoch >= end else 0.0 if epoch <= start else (epoch - start) / (end - start)
    size = cfg.min_train_size + t * (full - cfg.min_train_size)
    return min(full, int(round(size / 4)) * 4)


def augment_generator(device: torch.device, seed: int, epoch: int, rank: int, state=None) -> torch.Generator:
    """The augmentation RNG of (seed, epoch, rank), or a mid-epoch state being resumed."""
    gen = torch.Generator(device=device)
    if state is not None:
        gen.set_state(state)
    else:
        gen.manual_seed((seed * 7919 + epoch) * 131 + rank)
    return gen


class Trainer:
    """`Trainer(cfg).fit()` trains and returns the results (results.json's content).
    `on_epoch_end(epoch, row)` is called after each epoch's checkpoint; `self.run` holds the
    built run (engine/setup.py's Run) once training has started."""

    def __init__(self, cfg: TrainConfig, log=print, on_epoch_end=None):
        self.cfg, self.log, self.on_epoch_end = cfg, log, on_epoch_end
        self.stop_signal: str | None = None
        self.run: Run | None = None

    def fit(self) -> dict:
        t_start = time.time()
        self.device = resolve_device(self.cfg.device, self.cfg.gpu_id)
        self.dist = init_distributed(self.device.type, self.cfg.dist_backend)
        threads, self._old_handlers = torch.get_num_threads(), {}
        try:
            return self._fit(t_start)
        finally:  # leave the process as it was (tests and notebooks run several trainings in one)
            torch.set_num_threads(threads)
            for sig, h in self._old_handlers.items():
                signal.signal(sig, h)
            shutdown()

    def _fit(self, t_start: float) -> dict:
        cfg, dist = self.cfg, self.dist
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        tune_malloc(cfg.malloc)
        self.run_dir = cfg.run_dir()
        resume_path, state = self._find_resume()
        self.seed = self._choose_seed(state)
        self.data = data = build_data(cfg, self.seed, dist.rank, dist.world_size, self.device, log=self.log)
        if cfg.tta_shift >= data.input_size:
            raise UserError(f"--tta-shift {cfg.tta_shift} must be smaller than the {data.input_size}-pixel images")
        self.run = run = build_run(cfg, data, self.device, dist, state, str(resume_path))
        pos = ckpt_io.Position(epoch=cfg.start_epoch)
        if state is not None:
            pos = ckpt_io.restore_run(run, state, len(data.train), str(resume_path))
            if pos.epoch >= cfg.epochs:
                raise UserError(
                    f"{resume_path} has already finished {pos.epoch} epochs; raise --epochs to train further"
                )
        self.best_acc = pos.best_acc
        self.meta = {
            "arch": cfg.arch, "model_kwargs": cfg.model_kwargs(), "num_classes": len(data.classes),
            "classes": list(data.classes), "mean": list(data.mean), "std": list(data.std),
            "input_size": data.input_size, "dataset": cfg.dataset, "seed": self.seed, "config": cfg.to_dict(),
            "torchcls_version": __version__,
        }  # fmt: skip
        self.logger = self._open_logger(state is not None, pos, resume_path) if dist.is_main else None
        self._old_handlers = self._install_signal_handlers()
        self.total_images, self.total_train_time, row = 0, 0.0, {}
        for epoch in range(pos.epoch, cfg.epochs):
            resuming = epoch == pos.epoch and pos.batch > 0
            row = self._epoch(epoch, pos if resuming else None)
        return self._finish(row, t_start)

    # ------------------------------------------------------------------------- the steps of a run

    def _find_resume(self) -> tuple[Path | None, dict | None]:
        """The checkpoint to continue from, found before anything else so a bad path fails at once."""
        cfg, dist = self.cfg, self.dist
        path = ckpt_io.find_resume(self.run_dir) if cfg.resume == "auto" else Path(cfg.resume) if cfg.resume else None
        if dist.enabled:  # every rank must continue from the same checkpoint (a shared run folder)
            seen = gather_objects(str(path) if path else None, dist)
            if len(set(seen)) > 1:
                raise UserError(
                    f"the processes found different checkpoints to resume from ({seen}); the run "
                    f"folder {self.run_dir} must be the same (shared) folder on every machine"
                )
        return path, (ckpt_io.safe_load(path) if path else None)

    def _choose_seed(self, state: dict | None) -> int:
        """Given, else the resumed run's own (its data order continues), else a fresh one."""
        seed = self.cfg.seed if self.cfg.seed is not None else (state or {}).get("seed")
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        seed = broadcast_object(int(seed), self.dist)
        torch.manual_seed(seed)
        random.seed(seed)
        return seed

    def _open_logger(self, resumed: bool, pos: ckpt_io.Position, resume_path) -> RunLogger:
        cfg, data, run, dist = self.cfg, self.data, self.run, self.dist
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, self.run_dir / "config.yaml")
        logger = RunLogger(self.run_dir, resume=resumed, tensorboard=cfg.tensorboard, plot=cfg.plot)
        if resumed:
            logger.truncate_after(pos.epoch)
        procs = f" x {dist.world_size} process{'es' * (dist.world_size > 1)}" if dist.enabled else ""
        self.log(
            f"torchcls: training {cfg.arch} on {cfg.dataset} ({data.train_size} train / {data.select_size} "
            f"{data.select_name} images, {len(data.classes)} classes) for {cfg.epochs} epochs on "
            f"{self.device.type}{procs}; batch {cfg.train_batch} global ({cfg.train_batch // dist.world_size} "
            f"per process), seed {self.seed}, amp {amp_name(run.amp_dtype)}, "
            f"channels_last {'on' if run.channels_last else 'off'}"
        )
        if resume_path:
            at = f", batch {pos.batch}" if pos.batch else ""
            self.log(f"torchcls: resumed from {resume_path} at epoch {pos.epoch}{at}")
        elif cfg.resume == "auto":
            self.log(f"torchcls: --resume auto: no checkpoint in {self.run_dir} yet, starting a new run")
        self.log(f"torchcls: outputs in {self.run_dir}/")
        return logger

    def _save(self, epoch: int, batch: int, acc, stats: EpochStats | None, gen, best: bool = False) -> None:
        state = ckpt_io.run_state(
            self.run, epoch=epoch, batch=batch, acc=acc, best_acc=self.best_acc,
            partial=vars(stats).copy() if stats is not None else None, aug_gen=gen, meta=self.meta,
        )  # fmt: skip
        ckpt_io.atomic_save(state, self.run_dir / ckpt_io.LAST)
        if best:
            ckpt_io.atomic_save(state, self.run_dir / ckpt_io.BEST)

    def _epoch(self, epoch: int, resumed: ckpt_io.Position | None) -> dict:
        """Train epoch `epoch` (0-based; `resumed`: the position inside it), evaluate, checkpoint, log."""
        cfg, run, data, dist = self.cfg, self.run, self.data, self.dist
        data.train.set_epoch(epoch)
        start_batch = resumed.batch if resumed else 0
        gen = augment_generator(self.device, self.seed, epoch, dist.rank, resumed.aug_rng if resumed else None)
        stats = EpochStats(**resumed.partial) if resumed and resumed.partial else EpochStats()
        if stats.lr is None:
            stats.lr = run.optimizer.param_groups[0]["lr"]
        size = train_size_at(epoch, data.train_input_size or data.input_size, cfg)
        if hasattr(data.train, "set_size"):  # a loader that crops at the epoch's size itself (the image store)
            data.train.set_size(size)
        progress = Progress(len(data.train), f"epoch {epoch + 1}/{cfg.epochs}", cfg.log_interval,
                            enabled=dist.is_main, initial=start_batch)  # fmt: skip
        try:
            end = train_epoch(run.step, data.train, gen, stats, size=size, start_batch=start_batch,
                              max_skipped=cfg.skip_nonfinite, progress=progress, batch_size=cfg.train_batch,
                              should_stop=lambda: self.stop_signal is not None)  # fmt: skip
        except NonFiniteLoss as e:
            last = self.run_dir / ckpt_io.LAST
            kept = f"the last good checkpoint, {last}, is kept" if last.is_file() else "no checkpoint was written yet"
            raise NonFiniteLoss(
                e.value,
                e.batch,
                f"the loss became {e.value} at step {epoch * len(data.train) + e.batch} (epoch {epoch + 1}, batch "
                f"{e.batch}); {kept}. Try a lower --lr, --amp off, or --skip-nonfinite N to tolerate N such steps",
            ) from None
        if end.stopped:
            if dist.is_main:
                self._save(epoch, end.batches_done, None, stats, gen)
            barrier(dist)
            last = self.run_dir / ckpt_io.LAST
            raise Interrupted(
                f"stopped by {self.stop_signal} at epoch {epoch + 1}, batch {end.batches_done}; checkpoint written "
                f"to {last}. Resume with --resume {last} (or --resume auto)"
            )
        self.total_images += end.images
        self.total_train_time += end.seconds
        row = self._evaluate_epoch(epoch, stats, size, end)
        barrier(dist)
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch + 1, row)
        if self.stop_signal is not None and epoch + 1 < cfg.epochs:  # after the last one: just finish
            raise Interrupted(
                f"stopped by {self.stop_signal} after epoch {epoch + 1}; checkpoint in "
                f"{self.run_dir / ckpt_io.LAST}. Resume with --resume auto"
            )
        return row

    def _eval_kwargs(self, tta: bool) -> dict:
        cfg, run = self.cfg, self.run
        return dict(mean=self.data.mean, std=self.data.std, device=self.device, amp_dtype=run.amp_dtype,
                    channels_last=run.channels_last, tta_flip=cfg.tta_flip and tta, tta_shift=cfg.tta_shift * tta,
                    tta_below=cfg.tta_below, dist_info=self.dist, channels=run.step.channels)  # fmt: skip

    def _evaluate_epoch(self, epoch: int, stats: EpochStats, size: int, end) -> dict:
        cfg, data = self.cfg, self.data
        loss_sum, correct, count = all_reduce_sum([stats.loss_sum, stats.correct, stats.count], self.device, self.dist)
        self._report_skipped(data.train, "training")
        t1 = time.perf_counter()
        last = epoch == cfg.epochs - 1
        evaluated = last or (epoch + 1) % cfg.eval_every == 0  # --eval-every N: the others only train
        if evaluated:
            tta = last or cfg.tta_epochs == "all"  # --tta-epochs last: plain for the others
            # evaluation leaves the global RNG as it found it (a DataLoader iterator draws its
            # workers' seed from it), so training is the same whichever epochs are evaluated
            cuda = [torch.cuda.current_device()] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda):
                res = evaluate(self.run.eval_model(), data.select, **self._eval_kwargs(tta))
            self._report_skipped(data.select, data.select_name)
        else:
            res = {"top1": None, "top5": None, "loss": None}
        eval_time = time.perf_counter() - t1
        is_best = evaluated and res["top1"] > self.best_acc
        if is_best:
            self.best_acc = res["top1"]
        row = {
            "epoch": epoch + 1, "lr": stats.lr, "train_loss": loss_sum / max(1, count),
            "train_acc": 100 * correct / max(1, count), "valid_loss": res["loss"], "valid_acc": res["top1"],
            "valid_top5": res["top5"], "valid_set": data.select_name if evaluated else None,
            "best_acc": self.best_acc if evaluated or self.best_acc > 0 else None,
            "train_size": size, "train_time": end.seconds, "eval_time": eval_time if evaluated else None,
            "images_per_s": end.images / end.seconds if end.seconds > 0 else 0.0, "skipped_steps": stats.skipped,
        }  # fmt: skip
        if self.dist.is_main:
            self._save(epoch + 1, 0, res["top1"], None, None, best=is_best)
            self.logger.log_epoch(row)
            figures = (
                f"{data.select_name} loss {res['loss']:.4f} top-1 {res['top1']:.2f}% top-5 {res['top5']:.2f}%  "
                f"best {self.best_acc:.2f}%"
                if evaluated
                else f"not evaluated (--eval-every {cfg.eval_every})"
            )
            self.log(
                f"epoch {epoch + 1}/{cfg.epochs}  lr {stats.lr:.4g}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.2f}%  {figures}  {row['images_per_s']:.0f} img/s  "
                f"{end.seconds + eval_time:.0f}s"
            )
        return row

    def _finish(self, row: dict, t_start: float) -> dict:
        cfg, data, name = self.cfg, self.data, self.data.select_name
        results = {
            "dataset": cfg.dataset, "arch": cfg.arch, "epochs": cfg.epochs, "seed": self.seed,
            "final": {"top1": row.get("valid_acc"), "top5": row.get("valid_top5"), "loss": row.get("valid_loss"),
                      "set": name},
            "best": {"top1": self.best_acc, "set": name},
            "wall_time_s": time.time() - t_start,
            "train_images_per_s": self.total_images / self.total_train_time if self.total_train_time else None,
            "hardware": hardware_summary(self.device, self.dist.world_size), "config": cfg.to_dict(),
            # when and how it ran, for `torchcls results` (the command line as this process got it)
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": list(sys.argv),
        }  # fmt: skip
        if data.test is not None:  # selection was on held-out data: report the test set too
            results["final_test"] = evaluate(self.run.eval_model(), data.test, **self._eval_kwargs(True))
        if self.dist.is_main:
            (self.run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            self.logger.close()
            self.log(
                f"torchcls: done in {results['wall_time_s']:.0f}s; final {name} top-1 "
                f"{row.get('valid_acc', float('nan')):.2f}%, best {self.best_acc:.2f}%; outputs in {self.run_dir}/ "
                "(log.txt, metrics.jsonl, log.png, checkpoint.pth.tar, model_best.pth.tar, results.json)"
            )
        return results

    def _report_skipped(self, loader, what: str) -> None:
        """Name the files the loader could not read this epoch, over all ranks (a collective)."""
        take = getattr(loader, "take_skipped", None)
        if take is None:
            return
        files = [f for part in gather_objects(take(), self.dist) for f in part]
        if files and self.dist.is_main:
            more = f" and {len(files) - 20} more" if len(files) > 20 else ""
            self.log(f"torchcls: skipped {len(files)} unreadable file(s) this epoch ({what}): "
                     + ", ".join(files[:20]) + more)  # fmt: skip

    def _install_signal_handlers(self) -> dict:
        """SIGINT/SIGTERM: finish the batch, write a checkpoint, exit; a second signal stops at once."""
        old = {}
        if sys.platform == "win32":
            return old

        def handler(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(signum).name

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
        return old


def train(cfg: TrainConfig, log=print, on_epoch_end=None) -> dict:
    return Trainer(cfg, log, on_epoch_end).fit()
