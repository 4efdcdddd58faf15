"""Progress output and plots: plain, periodic lines when output is not a terminal; never a flood."""

import io
import json

from torchcls.report.plot import plot_run, read_metrics
from torchcls.report.progress import Progress


def test_progress_in_a_pipe_prints_plain_periodic_lines():
    out = io.StringIO()  # not a terminal
    p = Progress(1000, "epoch 1/1", interval=3600, stream=out)
    for _ in range(1000):
        p.update(1, loss="0.1", img_s="100")
    p.close()
    lines = out.getvalue().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("epoch 1/1 1000/1000  loss 0.1  img/s 100")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    out = io.StringIO()
    p = Progress(5, "e", interval=0, stream=out)
    for _ in range(5):
        p.update(1)
    assert len(out.getvalue().splitlines()) == 5


def test_plot_skips_a_line_cut_by_a_crash(tmp_path):
    rows = [
        {"epoch": e, "train_loss": 1.0 / e, "valid_loss": 1.2 / e, "train_acc": 50 + e, "valid_acc": 48 + e}
        for e in (1, 2, 3)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"epoch": 4, "tr')
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 3
    png = plot_run(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
