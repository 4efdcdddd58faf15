"""The files a run writes as it goes (rank 0 only): log.txt in the original's format,
metrics.jsonl with everything, TensorBoard events and log.png."""

from __future__ import annotations

import json
from pathlib import Path

from torchcls.report.plot import plot_run

LOG_HEADER = ["Learning Rate", "Train Loss", "Valid Loss", "Train Acc.", "Valid Acc."]


class RunLogger:
    def __init__(self, run_dir: Path, resume: bool, tensorboard: bool = True, plot: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_txt = self.run_dir / "log.txt"
        self.metrics = self.run_dir / "metrics.jsonl"
        self.plot = plot
        if not resume or not self.log_txt.exists():
            self.log_txt.write_text("\t".join(LOG_HEADER) + "\n")
            self.metrics.write_text("")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (only when on: a slow import)

                self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency; tolerate its absence anyway
                self.tb = None

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop rows of epochs after the checkpoint (written before a crash)."""
        rows = []
        if self.metrics.exists():
            for line in self.metrics.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if r.get("epoch", 0) <= epoch:
                    rows.append(r)
        self.metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
        lines = self.log_txt.read_text().splitlines() if self.log_txt.exists() else []
        head = lines[:1] or ["\t".join(LOG_HEADER)]
        self.log_txt.write_text("\n".join(head + lines[1 : 1 + len(rows)]) + "\n")

    def log_epoch(self, row: dict) -> None:
        vals = [row["lr"], row["train_loss"], row["valid_loss"], row["train_acc"], row["valid_acc"]]
        with open(self.log_txt, "a") as f:
            f.write("\t".join("nan" if v is None else f"{v:.6f}" for v in vals) + "\n")  # nan: not evaluated
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            step = row["epoch"]
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k.replace("_", "/", 1), v, step)
            self.tb.flush()
        if self.plot:
            plot_run(self.run_dir)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
