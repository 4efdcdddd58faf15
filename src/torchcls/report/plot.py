"""log.png: loss and accuracy curves of a run, drawn from its metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash; the next epoch rewrites the plot
    return rows


def plot_run(run_dir: Path, out: Path | None = None) -> Path | None:
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    if not rows:
        return None
    import matplotlib  # noqa: PLC0415 (imported when drawing: a slow import)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    matplotlib.use("Agg")

    ep = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [r["train_loss"] for r in rows], label="train")
    ev = [r for r in rows if r.get("valid_acc") is not None]  # --eval-every N: some epochs only train
    ev_ep, ev_style = [r["epoch"] for r in ev], "o-" if len(ev) < len(rows) else "-"
    ax1.plot(ev_ep, [r["valid_loss"] for r in ev], ev_style, label="valid")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.legend(), ax1.grid(alpha=0.3)
    ax2.plot(ep, [r["train_acc"] for r in rows], label="train")
    ax2.plot(ev_ep, [r["valid_acc"] for r in ev], ev_style, label="valid top-1")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("accuracy (%)"), ax2.legend(), ax2.grid(alpha=0.3)
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out = Path(out or Path(run_dir) / "log.png")
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out)
    return out
