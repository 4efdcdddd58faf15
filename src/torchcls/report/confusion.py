"""Per-class figures of an evaluation: the confusion matrix as CSV, a heat map, a per-class table.

The matrix is counts, rows the true class and columns the predicted (top-1) class, so row i sums to
the number of images of class i and the whole matrix to the number of images evaluated.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

CORNER = "true \\ predicted"
ANNOTATE_UP_TO = 30  # classes: above this the cells are too small for their counts
NAME_TICKS_UP_TO = 120  # classes: above this the axes show class indices only


def per_class_rows(matrix: torch.Tensor, classes: list[str]) -> list[dict]:
    """One dict a class: its images, top-1 hits and accuracy, and the class it is most often taken for."""
    rows = []
    for i, name in enumerate(classes):
        row = matrix[i].clone()
        images, correct = int(row.sum()), int(row[i])
        row[i] = -1
        j = int(row.argmax()) if len(classes) > 1 else i
        wrong = int(row[j]) if j != i else 0
        rows.append({
            "class": name, "images": images, "correct": correct,
            "top1": 100.0 * correct / images if images else None,
            "confused_with": classes[j] if wrong > 0 else None, "confused_count": wrong,
        })  # fmt: skip
    return rows


def format_per_class(rows: list[dict]) -> str:
    """The per-class table, one line a class."""
    width = max([len("class"), *(len(r["class"]) for r in rows)])
    lines = [f"{'class':<{width}}  {'images':>6}  {'top-1':>7}  most often taken for"]
    for r in rows:
        acc = "-" if r["images"] == 0 else f"{r['top1']:.2f}%"
        other = f"{r['confused_with']} ({r['confused_count']})" if r["confused_with"] else "-"
        lines.append(f"{r['class']:<{width}}  {r['images']:>6}  {acc:>7}  {other}")
    return "\n".join(lines)


def write_confusion_csv(path: Path, matrix: torch.Tensor, classes: list[str]) -> Path:
    """`path`: a header row of the predicted classes, then one row a true class (its name, then counts)."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([CORNER, *classes])
        for name, row in zip(classes, matrix.tolist(), strict=True):
            w.writerow([name, *(int(v) for v in row)])
    return path


def read_confusion_csv(path: Path) -> tuple[list[str], torch.Tensor]:
    """(classes, matrix) of a file `write_confusion_csv` wrote."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    classes = rows[0][1:]
    return classes, torch.tensor([[int(v) for v in r[1:]] for r in rows[1:]], dtype=torch.int64)


def plot_confusion(path: Path, matrix: torch.Tensor, classes: list[str], title: str = "") -> Path:
    """A heat map of the matrix, each row scaled to its class's share (the diagonal is per-class
    recall), with the counts written in the cells when there are few classes."""
    import matplotlib  # noqa: PLC0415 (imported when drawing: a slow import)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    matplotlib.use("Agg")
    k = len(classes)
    counts = matrix.to(torch.float64)
    share = counts / counts.sum(1, keepdim=True).clamp_min(1)
    side = min(max(5.0, 0.45 * k + 2.5), 40.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(share.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if k <= NAME_TICKS_UP_TO:
        font = 9 if k <= 20 else 6 if k <= 50 else 4
        ax.set_xticks(range(k), classes, rotation=90, fontsize=font)
        ax.set_yticks(range(k), classes, fontsize=font)
    if k <= ANNOTATE_UP_TO:
        for i in range(k):
            for j in range(k):
                n = int(matrix[i, j])
                if n:
                    color = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"confusion matrix ({int(matrix.sum())} images)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
