"""Nothing lost, nothing executed: crashes, signals, a full disk, non-finite losses, hostile and
broken checkpoints, and readers racing a writer, each tried for real (subprocesses, files,
signals). docs/RELIABILITY.md is the table of what these tests show.

Every run here is tiny (384 Fashion-MNIST images, ResNet-8, one thread) so the file stays fast.
"""

import hashlib
import json
import os
import pickle
import resource
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from tests._data import needs_fmnist
from torchcls.cli import build_parser, main
from torchcls.commands.train import config_from_args
from torchcls.engine import checkpoint as ckpt_io
from torchcls.engine.checkpoint import safe_load
from torchcls.engine.train import train
from torchcls.errors import UserError

pytestmark = needs_fmnist

# cosine: the rate changes every step, so a resume that gets the schedule position wrong shows
ARGS = (
    "-a resnet --depth 8 --dataset fashion-mnist --train-subset 384 --test-subset 256 --train-batch 64 "
    "--test-batch 256 --epochs 2 --lr 0.05 --lr-schedule cosine --manualSeed 3 --plot off "
    "--tensorboard off --threads 1 --amp off --log-interval 0"
)
STEPS = 6  # 384 images / batch 64
LAUNCH = Path(__file__).resolve().parent / "launch.py"
CrossEntropyLoss = nn.CrossEntropyLoss  # the real one, before any test patches it


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_weights(a: Path, b: Path):
    wa, wb = safe_load(a)["state_dict"], safe_load(b)["state_dict"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs"


def assert_all_checkpoints_load(run: Path):
    for p in run.glob("*.pth.tar"):
        safe_load(p)  # raises UserError if a reader would ever see a broken file


class Run:
    """`python -m torchcls train ARGS -c RUN ...` in a subprocess; its output read as it comes."""

    def __init__(self, run: Path, extra: str = "", args: str = ARGS, env: dict | None = None, faults=(), **popen):
        # tests/launch.py runs the real CLI, with `faults` injected from outside the package
        cmd = [
            sys.executable,
            str(LAUNCH),
            *faults,
            "--",
            "train",
            *shlex.split(args),
            "-c",
            str(run),
            *shlex.split(extra),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=run.parent,
            **popen,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, cond, timeout=120.0):
        """Poll until cond() is true (or fail with the output so far)."""
        end = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None and not cond():
                self.reader.join(5)
                if cond():
                    return
                pytest.fail(f"the run ended (rc {self.proc.returncode}) before the awaited point:\n{self.output}")
            if time.monotonic() > end:
                self.proc.kill()
                pytest.fail(f"timed out waiting; output:\n{self.output}")
            time.sleep(0.002)

    def wait_line(self, text: str, timeout=120.0):
        self.wait_for(lambda: any(text in line for line in self.lines), timeout)

    def finish(self, timeout=180.0) -> int:
        rc = self.proc.wait(timeout)
        self.reader.join(10)
        return rc


def errors_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("torchcls: error:")]


def one_error(capsys, rc) -> str:
    """The run failed with exit 2 and exactly one error line, no traceback (progress lines aside)."""
    err = capsys.readouterr().err
    assert rc == 2, err
    errs = errors_of(err)
    assert len(errs) == 1 and "Traceback" not in err, err
    return errs[0]


def train_in_process(run: Path, *extra: str, args: str = ARGS) -> int:
    """The same command as Run, in this process (no interpreter start-up: faster)."""
    return main(["train", *shlex.split(args), "-c", str(run), *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must equal, weight for weight."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert train_in_process(run) == 0
    return run


# ----------------------------------------------------------------------------- 1. SIGKILL anywhere


def test_sigkill_during_epoch_evaluation_and_checkpoint_write_then_resume_auto(tmp_path, reference, capsys):
    run = tmp_path / "run"
    # (a) no checkpoint yet: --resume auto starts a new run; killed in the middle of epoch 1
    r = Run(run, "--resume auto")
    r.wait_line(f"epoch 1/2 3/{STEPS}")
    r.proc.kill()
    assert r.finish() == -signal.SIGKILL
    assert "no checkpoint in" in r.output and "starting a new run" in r.output
    assert not (run / "checkpoint.pth.tar").exists()

    # (b) again from scratch; killed once epoch 2's training is done: during its evaluation (held
    # open by --slow-eval: the run's 2nd), before its checkpoint (the checkpoint on disk still says epoch 1)
    r = Run(run, "--resume auto", faults=["--slow-eval", "2", "60"])
    r.wait_line(f"epoch 2/2 {STEPS}/{STEPS}")
    r.proc.kill()
    assert r.finish() == -signal.SIGKILL
    assert "starting a new run" in r.output
    assert safe_load(run / "checkpoint.pth.tar")["epoch"] == 1, "the kill did not land before epoch 2's save"
    assert_all_checkpoints_load(run)

    # (c) killed while epoch 2's checkpoint is being written (its temporary file exists)
    r = Run(run, "--resume auto", faults=["--slow-save", "60"])
    tmp_glob = ".checkpoint.pth.tar.*.tmp"
    r.wait_for(lambda: any(run.glob(tmp_glob)))
    r.proc.kill()
    assert r.finish() == -signal.SIGKILL
    assert "resumed from" in r.output and "at epoch 1" in r.output
    assert list(run.glob(tmp_glob)), "killed outside the write"
    assert safe_load(run / "checkpoint.pth.tar")["epoch"] == 1  # the old one, whole
    assert_all_checkpoints_load(run)

    # (d) resume to the end: the same weights and log as the run that was never interrupted
    assert train_in_process(run, "--resume", "auto") == 0
    assert_same_weights(reference / "checkpoint.pth.tar", run / "checkpoint.pth.tar")
    assert (run / "log.txt").read_text() == (reference / "log.txt").read_text()
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not list(run.glob(".*.tmp")), "the killed write's temporary file was not cleaned up"
    assert (run / "results.json").is_file()
    assert_all_checkpoints_load(run)

    # a finished run, resumed again, says so in one line
    capsys.readouterr()
    err = one_error(capsys, train_in_process(run, "--resume", "auto"))
    assert "already finished 2 epochs" in err


# ----------------------------------------------------------------------------- 2. SIGINT / SIGTERM


def test_sigint_and_sigterm_write_mid_epoch_checkpoints_that_resume_exactly(tmp_path, reference):
    run = tmp_path / "run"
    r = Run(run)
    r.wait_line(f"epoch 1/2 3/{STEPS}")
    r.proc.send_signal(signal.SIGINT)
    assert r.finish() == 130, r.output
    assert "Traceback" not in r.output
    last = r.lines[-1]
    assert last.startswith("torchcls: stopped by SIGINT at epoch 1, batch ") and "--resume" in last
    ck = safe_load(run / "checkpoint.pth.tar")
    assert ck["epoch"] == 0 and 3 <= ck["batch"] < STEPS
    assert ck["partial"]["count"] == 64 * ck["batch"] and ck["aug_rng"] is not None and ck["rng"]

    r = Run(run, "--resume auto")
    r.wait_line(f"epoch 2/2 3/{STEPS}")
    r.proc.send_signal(signal.SIGTERM)
    assert r.finish() == 130, r.output
    assert f"resumed from {run / 'checkpoint.pth.tar'} at epoch 0, batch {ck['batch']}" in r.output
    assert r.lines[-1].startswith("torchcls: stopped by SIGTERM at epoch 2, batch ") and "Traceback" not in r.output
    ck2 = safe_load(run / "checkpoint.pth.tar")
    assert ck2["epoch"] == 1 and 3 <= ck2["batch"] < STEPS

    # a signal after the last step of the last epoch: nothing left to save for later, the run finishes
    r = Run(run, "--resume auto")
    r.wait_line(f"epoch 2/2 {STEPS}/{STEPS}")
    r.proc.send_signal(signal.SIGINT)
    assert r.finish() == 0, r.output
    assert (run / "results.json").is_file() and "torchcls: done" in r.output
    assert_same_weights(reference / "checkpoint.pth.tar", run / "checkpoint.pth.tar")
    # log.txt, learning rates included (the rate at each epoch's start, not at the resume point)
    assert (run / "log.txt").read_text() == (reference / "log.txt").read_text()
    ours = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    keys = ("epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "best_acc")
    assert [[row[k] for k in keys] for row in ours] == [[row[k] for k in keys] for row in ref]


# ----------------------------------------------------------------------------- 3. full disk


def _crash_after_first_epoch(run: Path, args: str = ARGS):

    class Crash(Exception):
        pass

    def stop(epoch, row):
        raise Crash

    cfg = config_from_args(build_parser().parse_args(["train", *shlex.split(args), "-c", str(run)]))
    with pytest.raises(Crash):
        train(cfg, log=lambda *a: None, on_epoch_end=stop)
    assert safe_load(run / "checkpoint.pth.tar")["epoch"] == 1


def _file_size_limit(limit: int):
    def apply():  # in the child: writes past `limit` bytes fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_keeps_the_previous_checkpoint_and_stops_with_one_line(tmp_path):
    run = tmp_path / "run"
    _crash_after_first_epoch(run)
    before = digest(run / "checkpoint.pth.tar")
    limit = (run / "checkpoint.pth.tar").stat().st_size // 2
    assert limit > 100_000  # far above log.txt and metrics.jsonl
    # no file may grow past half a checkpoint: the epoch-2 checkpoint cannot be written
    r = Run(run, "--resume auto", preexec_fn=_file_size_limit(limit))
    assert r.finish() == 2, r.output
    errs = errors_of(r.output)
    assert len(errs) == 1 and "Traceback" not in r.output, r.output
    assert "could not write checkpoint" in errs[0] and "File too large" in errs[0] and "--resume auto" in errs[0]
    assert digest(run / "checkpoint.pth.tar") == before  # untouched, and it loads
    assert safe_load(run / "checkpoint.pth.tar")["epoch"] == 1
    assert not list(run.glob(".*.tmp")), "a temporary file was left behind"
    assert len((run / "log.txt").read_text().splitlines()) == 2  # header + epoch 1: no row without its checkpoint


def test_atomic_save_failures_leave_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pth.tar"
    ckpt_io.atomic_save({"state_dict": {"w": torch.ones(3)}}, path)
    before = digest(path)
    with pytest.raises((pickle.PicklingError, AttributeError)) as e:  # a bug, not a disk fault
        ckpt_io.atomic_save({"state_dict": {}, "f": lambda: 0}, path)  # torch.save cannot pickle a lambda
    assert not isinstance(e.value, ckpt_io.CheckpointWriteError)
    assert digest(path) == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    # a temporary file left by a process killed mid-write is removed by the next good save
    (tmp_path / ".checkpoint.pth.tar.dead1234.tmp").write_bytes(b"partial")
    ckpt_io.atomic_save({"state_dict": {"w": torch.zeros(3)}}, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert torch.equal(safe_load(path)["state_dict"]["w"], torch.zeros(3))


# ----------------------------------------------------------------------------- 4. non-finite loss


def _nan_loss_at(monkeypatch, steps: set[int]):
    """Make the training loss NaN at the given 0-based optimizer steps (the model is untouched)."""
    calls = {"n": 0, "ckpt": []}

    class NaNAt(CrossEntropyLoss):
        def forward(self, out, y):
            loss = super().forward(out, y)
            step, calls["n"] = calls["n"], calls["n"] + 1
            return loss * float("nan") if step in steps else loss

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", NaNAt)
    return calls


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _nan_loss_at(monkeypatch, {STEPS + 2})  # epoch 2, batch 2
    err = one_error(capsys, train_in_process(run))
    assert f"the loss became nan at step {STEPS + 2} (epoch 2, batch 2)" in err
    assert f"the last good checkpoint, {run / 'checkpoint.pth.tar'}, is kept" in err
    assert "--lr" in err and "--skip-nonfinite" in err
    ck = safe_load(run / "checkpoint.pth.tar")
    assert ck["epoch"] == 1 and ck["batch"] == 0
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    assert len((run / "log.txt").read_text().splitlines()) == 2


def test_skip_nonfinite_tolerates_n_steps_per_epoch(tmp_path, monkeypatch, capsys):
    _nan_loss_at(monkeypatch, {3, 5, STEPS + 1})
    run = tmp_path / "run"
    rc = train_in_process(run, "--skip-nonfinite", "2")
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows] == [2, 1]
    ck = safe_load(run / "checkpoint.pth.tar")
    assert ck["epoch"] == 2 and all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    # one fewer tolerated: the second bad step of epoch 1 stops the run
    _nan_loss_at(monkeypatch, {3, 5})
    capsys.readouterr()
    err = one_error(capsys, train_in_process(tmp_path / "r2", "--skip-nonfinite", "1"))
    assert "at step 5 (epoch 1, batch 5)" in err and "no checkpoint was written yet" in err


def test_diverging_lr_stops_with_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    err = one_error(capsys, train_in_process(run, "--lr", "1e6"))
    assert "the loss became" in err and " at step " in err and "lower --lr" in err
    assert "no checkpoint was written yet" in err
    assert not (run / "checkpoint.pth.tar").exists()


# ----------------------------------------------------------------------------- 5. hostile and broken checkpoints


class Payload:
    """Unpickling this creates `marker` (builtins.open(marker, 'w')): any code could run instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, reference, capsys):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth.tar"
    state = safe_load(reference / "checkpoint.pth.tar")
    torch.save({**state, "extra": Payload(marker)}, evil)
    torch.load(evil, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.exists()
    marker.unlink()

    err = one_error(capsys, main(["eval", str(evil)]))
    assert "was refused" in err and "Unsupported global: GLOBAL io.open" in err and not marker.exists()
    assert "weights_only" not in err  # torch's advice to load unsafely is not passed on
    err = one_error(capsys, main(["train", *shlex.split(ARGS), "-c", str(tmp_path / "r"), "--resume", str(evil)]))
    assert "was refused" in err and not marker.exists()
    run = tmp_path / "auto"
    run.mkdir()
    (run / "checkpoint.pth.tar").write_bytes(evil.read_bytes())
    err = one_error(capsys, main(["train", *shlex.split(ARGS), "-c", str(run), "--resume", "auto"]))
    assert "--resume auto" in err and "was refused" in err and not marker.exists()
    assert digest(run / "checkpoint.pth.tar") == digest(evil)  # not overwritten by a new run
    # a plain pickle (not torch's zip format) with the same payload
    plain = tmp_path / "plain.pth"
    plain.write_bytes(pickle.dumps({"state_dict": {}, "x": Payload(marker)}))
    assert "unreadable" in one_error(capsys, main(["eval", str(plain)]))
    assert not marker.exists()


def test_truncated_empty_and_foreign_checkpoints_are_one_line_errors(tmp_path, reference, capsys):
    good = (reference / "checkpoint.pth.tar").read_bytes()
    trunc = tmp_path / "truncated.pth.tar"
    trunc.write_bytes(good[: len(good) // 2])
    empty = tmp_path / "empty.pth.tar"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pth.tar"
    garbage.write_bytes(b"not a checkpoint" * 256)
    noweights = tmp_path / "noweights.pth.tar"
    torch.save({"weights": torch.ones(2)}, noweights)
    cases = [
        (trunc, "unreadable (truncated or corrupt)"),
        (empty, "is empty (0 bytes)"),
        (garbage, "is not a PyTorch checkpoint"),
        (noweights, "no 'state_dict' key"),
        (tmp_path / "missing.pth.tar", "does not exist"),
    ]
    for path, needle in cases:
        assert needle in one_error(capsys, main(["eval", str(path)])), path
        err = one_error(capsys, main(["train", *shlex.split(ARGS), "-c", str(tmp_path / "r"), "--resume", str(path)]))
        assert needle in err, path
    # --resume auto over a damaged checkpoint refuses to start over (which would destroy it)
    run = tmp_path / "auto"
    run.mkdir()
    (run / "checkpoint.pth.tar").write_bytes(trunc.read_bytes())
    err = one_error(capsys, main(["train", *shlex.split(ARGS), "-c", str(run), "--resume", "auto"]))
    assert "truncated or corrupt" in err and "Move it away" in err
    assert digest(run / "checkpoint.pth.tar") == digest(trunc)


def test_checkpoint_of_another_architecture_or_class_count(tmp_path, reference, capsys):
    ref = reference / "checkpoint.pth.tar"
    err = one_error(
        capsys,
        main(
            [
                "train",
                *shlex.split(ARGS.replace("-a resnet --depth 8", "-a resnet32")),
                "-c",
                str(tmp_path / "r"),
                "--resume",
                str(ref),
            ]
        ),
    )
    assert "holds a resnet --depth 8 model but this run is -a resnet32; pass -a resnet --depth 8 or" in err
    # the same checkpoint with a 100-class head
    state = safe_load(ref)
    wide = {
        k: (torch.zeros(100, *v.shape[1:]) if v.ndim and v.shape[0] == 10 else v)
        for k, v in state["state_dict"].items()
    }
    assert sum(1 for k in wide if wide[k].shape != state["state_dict"][k].shape) == 2  # fc weight and bias
    c100 = tmp_path / "c100.pth.tar"
    torch.save({**state, "state_dict": wide, "num_classes": 100}, c100)
    err = one_error(capsys, main(["train", *shlex.split(ARGS), "-c", str(tmp_path / "r"), "--resume", str(c100)]))
    assert "was trained for 100 classes but fashion-mnist has 10" in err
    err = one_error(capsys, main(["eval", str(c100)]))
    assert "has 100 classes but fashion-mnist has 10" in err
    # an original pytorch-classification checkpoint (weights only, no metadata): the shapes tell
    bare = tmp_path / "bare.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in wide.items()}, "epoch": 1}, bare)
    err = one_error(capsys, main(["train", *shlex.split(ARGS), "-c", str(tmp_path / "r"), "--resume", str(bare)]))
    assert "does not fit this model" in err and "(10, 64) here" in err
    err = one_error(capsys, main(["eval", str(bare)]))
    assert "lacks arch, num_classes, mean, std" in err


# ----------------------------------------------------------------------------- 6. readers racing a writer

READER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from torchcls.engine.checkpoint import safe_load
    path, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    loads, errors, epochs = 0, [], set()
    out.with_suffix(".ready").write_text("")
    while not stop.exists():
        if path.exists():
            try:
                ck = safe_load(path)
                loads += 1
                epochs.add(ck["epoch"])
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
        time.sleep(0.03)
    out.write_text(json.dumps({"loads": loads, "errors": errors, "epochs": sorted(epochs)}))
""")


def test_readers_always_see_a_complete_checkpoint_while_training_writes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    stop = tmp_path / "stop"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    readers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                READER,
                str(run / "checkpoint.pth.tar"),
                str(stop),
                str(tmp_path / f"reader{i}.json"),
            ],
            env=env,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"reader{i}.ready").exists() for i in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in readers)
            time.sleep(0.05)
        args = ARGS.replace("--train-subset 384", "--train-subset 256")
        r = Run(run, args=args.replace("--epochs 2", "--epochs 5"))
        assert r.finish() == 0, r.output
    finally:
        stop.write_text("")
        for p in readers:
            p.wait(60)
    for i in range(2):
        res = json.loads((tmp_path / f"reader{i}.json").read_text())
        assert res["errors"] == [], res["errors"][:3]
        assert res["loads"] >= 10 and len(res["epochs"]) >= 3, res  # they read while epochs were written


def _race(path: Path, state: dict, write, seconds: float) -> tuple[int, int]:
    """Read `path` with safe_load in a loop while a thread rewrites it with `write`."""

    ckpt_io.atomic_save(state, path)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            write(state, path)

    t = threading.Thread(target=writer)
    t.start()
    ok = bad = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            try:
                safe_load(path)
                ok += 1
            except UserError:
                bad += 1
    finally:
        stop.set()
        t.join()
    return ok, bad


def test_the_reader_race_would_catch_a_non_atomic_writer(tmp_path, reference):
    """The control for the test above: the same reads against a plain torch.save over the file fail."""
    state = safe_load(reference / "checkpoint.pth.tar")
    ok, bad = _race(tmp_path / "plain.pth.tar", state, torch.save, 1.0)
    assert bad > 0, "a plain torch.save was never caught mid-write: the race test would prove nothing"
    ok, bad = _race(tmp_path / "atomic.pth.tar", state, ckpt_io.atomic_save, 1.5)
    assert bad == 0 and ok > 0
