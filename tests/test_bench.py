"""`torchcls bench`: the output's structure (no speed assertions), on a tiny Fashion-MNIST subset."""

import json
import re

from tests._data import needs_fmnist
from torchcls.cli import main

TINY = [
    "bench",
    "-a",
    "resnet20",
    "-d",
    "fashion-mnist",
    "--train-subset",
    "128",
    "--test-subset",
    "64",
    "--train-batch",
    "32",
    "--test-batch",
    "32",
    "--steps",
    "2",
    "--windows",
    "2",
    "--warmup",
    "1",
    "--device",
    "cpu",
]


def _figure(line: str) -> float:
    return float(re.search(r":\s+([0-9.]+) images/s", line).group(1))


@needs_fmnist
def test_bench_vs_reference_text(capsys):
    assert main(TINY + ["--vs-reference", "-j", "0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "128 training images" in lines[0]
    ours = [ln for ln in lines if ln.startswith("ours:") and "images/s" in ln]
    ref = [ln for ln in lines if ln.startswith("reference:") and "images/s" in ln]
    assert len(ours) == 1 and len(ref) == 1
    o, r = _figure(ours[0]), _figure(ref[0])
    assert o > 0 and r > 0
    m = re.fullmatch(r"ratio ours/reference: ([0-9.]+)", lines[-1])
    assert m, lines[-1]
    # the printed figures are rounded to 0.1 images/s and the ratio to 0.01
    assert abs(float(m.group(1)) - o / r) <= 0.006 + 0.001 * o / r


@needs_fmnist
def test_bench_json_and_eval(capsys):
    assert main(TINY + ["--vs-reference", "-j", "0", "--eval", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["train_images"] == 128 and r["batch"] == 32 and r["dataset"] == "fashion-mnist"
    for name in ("ours", "reference"):
        assert r[name]["images_per_s"] > 0 and r[name]["eval_images_per_s"] > 0
        assert len(r[name]["windows_images_per_s"]) == 2
        assert r[name]["peak_memory_mb"] >= 0
    assert r["reference"]["workers"] == 0
    assert r["ratio"] == r["ours"]["images_per_s"] / r["reference"]["images_per_s"]


@needs_fmnist
def test_bench_ours_only_has_no_ratio(capsys):
    assert main(TINY + ["--amp", "off", "--channels-last", "off"]) == 0
    out = capsys.readouterr().out
    assert "ratio" not in out and "reference:" not in out
    assert "amp off, channels_last off" in out


def test_bench_rejects_zero_windows(capsys):
    assert main(["bench", "-a", "resnet20", "--windows", "0"]) == 2
    assert "--windows" in capsys.readouterr().err
