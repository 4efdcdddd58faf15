"""benchmarks/gpu_check.sh, the prepared one-GPU check, in what a CPU can run of it: its syntax, its
tiny CPU mode (GPU_CHECK_QUICK=1 GPU_CHECK_DEVICE=cpu: every part but the CUDA-only one, on a few
hundred images), a failing part that does not stop the others, and its refusal without a GPU."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests._data import CIFAR_ARCHIVE, DATA, FMNIST

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PARTS = ["cuda_tests", "bench", "main", "speednet"]


def gpu_check(out: Path, timeout: int = 240, **env) -> subprocess.CompletedProcess:
    """Run the script into `out` with `env` added (TORCHCLS_DATA absolute: the script runs in the root)."""
    full = {**os.environ, "OUT": str(out), "TORCHCLS_DATA": str(DATA.resolve()), **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)


def table(out: Path) -> dict[str, dict]:
    """summary.md's table of parts: {part: {status, exit, wall, figures}}."""
    rows = {}
    for line in (out / "summary.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in PARTS:
            rows[cells[0]] = dict(zip(("status", "exit", "wall", "figures"), cells[1:], strict=True))
    return rows


def top1(figures: str) -> float:
    m = re.search(r"top-1 (\d+\.\d+)%", figures)
    assert m, figures
    return float(m.group(1))


def test_script_is_executable_and_its_syntax_is_valid():
    assert os.access(SCRIPT, os.X_OK)
    p = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_quick_cpu_mode_records_every_part(tmp_path):
    out = tmp_path / "out"
    p = gpu_check(out, GPU_CHECK_QUICK="1", GPU_CHECK_DEVICE="cpu")
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    summary = (out / "summary.md").read_text()
    assert "- GPU (nvidia-smi: name, memory.total, driver_version): " in summary
    assert "- GPU (torch.cuda.get_device_name): " in summary and "- torch: " in summary
    assert "- CPU (lscpu): " in summary and "device: cpu" in summary
    rows = table(out)
    assert list(rows) == PARTS, summary
    assert rows["cuda_tests"]["status"].startswith("skipped: CUDA-only") and rows["cuda_tests"]["exit"] == "-"
    for name in PARTS[1:]:  # each ran (exit 0, a log with its command) or was skipped for want of its data
        row = rows[name]
        if row["status"].startswith("skipped: no "):
            continue
        assert row["status"] == "ok" and row["exit"] == "0" and float(row["wall"]) > 0, row
        assert (out / f"{name}.log").read_text().startswith("$ ")
        assert f"- {name} (timeout " in summary
    if FMNIST.is_dir():
        assert 0 <= top1(rows["main"]["figures"]) <= 100
        assert "wall " in rows["main"]["figures"] and "speednet_mini on fashion-mnist" in rows["main"]["figures"]
        assert (out / "main_run" / "results.json").is_file()
    if CIFAR_ARCHIVE.is_file():
        assert re.search(r"ratio ours/reference \d+\.\d+; ours \d+\.\d images/s", rows["bench"]["figures"])
        assert "ratio ours/reference:" in summary  # the bench's own lines, under its key lines
        assert 0 <= top1(rows["speednet"]["figures"]) <= 100
        assert "seed 0, speednet on cifar10" in rows["speednet"]["figures"]
    else:
        assert rows["bench"]["status"].startswith("skipped") and rows["speednet"]["status"].startswith("skipped")
    assert not list(out.rglob("*.pth.tar"))  # checkpoints are deleted: only figures and logs come back
    tsv = (out / "parts.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in tsv] == ["part", *PARTS]


@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason=f"{CIFAR_ARCHIVE} not found")
def test_a_failing_part_is_recorded_and_the_others_still_run(tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    data.mkdir()
    (data / CIFAR_ARCHIVE.name).symlink_to(CIFAR_ARCHIVE.resolve())  # CIFAR-10 alone, no Fashion-MNIST
    # the bench times out after 1 s and so does SpeedNet, started after it; without Fashion-MNIST
    # the main job is skipped, not failed
    p = gpu_check(out, GPU_CHECK_QUICK="1", GPU_CHECK_DEVICE="cpu", GPU_CHECK_TIMEOUT_BENCH="1",
                  GPU_CHECK_TIMEOUT_SPEEDNET="1", TORCHCLS_DATA=str(data),
                  FMNIST_SYSTEM_DIR=str(tmp_path / "nothing"))  # fmt: skip
    assert p.returncode == 1, (p.stdout + p.stderr)[-4000:]
    rows = table(out)
    for part in ("bench", "speednet"):
        assert rows[part]["status"] == "FAILED: timed out after 1 s" and rows[part]["exit"] == "124"
    assert rows["main"]["status"].startswith("skipped: no Fashion-MNIST") and rows["main"]["exit"] == "-"
    summary = (out / "summary.md").read_text()
    assert "**2 part(s) failed**: bench, speednet" in summary and "last lines of bench.log" in summary


def test_without_cuda_it_refuses_with_one_line_and_exit_2(tmp_path):
    out = tmp_path / "out"
    p = gpu_check(out, timeout=60, CUDA_VISIBLE_DEVICES="", GPU_CHECK_QUICK="0")  # no GPU visible, full mode
    assert p.returncode == 2, (p.stdout + p.stderr)[-4000:]
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("no CUDA device: "), p.stdout
    assert "no CUDA device: " in (out / "summary.md").read_text() and not table(out)
    p = gpu_check(out, timeout=60, GPU_CHECK_DEVICE="gpu")
    assert p.returncode == 2 and "GPU_CHECK_DEVICE must be auto, cuda or cpu" in p.stderr
