"""One training epoch over a loader: the step once a batch, the epoch's sums, progress, and a stop
between batches when asked (a signal)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from torchcls.engine.step import TrainStep
from torchcls.errors import UserError
from torchcls.report.progress import Progress


class NonFiniteLoss(UserError):
    def __init__(self, value: float, batch: int, message: str | None = None):
        super().__init__(message or f"the loss became {value} at batch {batch}")
        self.value, self.batch = value, batch


@dataclass
class EpochStats:
    loss_sum: float = 0.0
    correct: float = 0.0
    count: float = 0.0
    skipped: int = 0
    lr: float | None = None  # the rate at the epoch's start (log.txt's), kept across a mid-epoch resume

    def add(self, loss: float, correct: int, count: int) -> None:
        self.loss_sum += loss * count
        self.correct += correct
        self.count += count


@dataclass
class EpochEnd:
    stats: EpochStats
    batches_done: int  # of the epoch, counting those before a mid-epoch resume
    images: int  # trained in this call
    seconds: float
    stopped: bool  # should_stop() was true before the epoch's last batch


def train_epoch(
    step: TrainStep,
    loader,
    gen: torch.Generator,
    stats: EpochStats,
    *,
    size: int | None = None,
    start_batch: int = 0,
    max_skipped: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    batch_size: int = 0,
) -> EpochEnd:
    """Run `step` on the loader's batches from `start_batch`. A non-finite loss is skipped up to
    `max_skipped` times an epoch, then NonFiniteLoss (the caller adds where the last good
    checkpoint is). `batch_size` is the global batch, for the images/s figure."""
    t0 = time.perf_counter()
    total = len(loader)
    batch_i, stopped = start_batch, False
    step.model.train()
    for x, y in loader.iterate(start_batch):
        r = step(x, y, gen, size)
        if r.finite:
            stats.add(r.loss, r.correct, r.count)
        else:
            stats.skipped += 1
            if stats.skipped > max_skipped:
                if progress is not None:
                    progress.close()
                raise NonFiniteLoss(r.loss, batch_i)
        batch_i += 1
        if progress is not None:
            elapsed = time.perf_counter() - t0
            progress.update(
                1,
                loss=f"{stats.loss_sum / max(1, stats.count):.4f}",
                acc=f"{100 * stats.correct / max(1, stats.count):.2f}%",
                lr=f"{step.optimizer.param_groups[0]['lr']:.4g}",
                img_s=f"{(batch_i - start_batch) * batch_size / elapsed:.0f}",
            )
        if should_stop():
            stopped = batch_i < total  # a stop after the last batch lets the epoch finish
            break
    seconds = time.perf_counter() - t0
    if progress is not None:
        progress.close()
    return EpochEnd(stats, batch_i, (batch_i - start_batch) * batch_size, seconds, stopped)
