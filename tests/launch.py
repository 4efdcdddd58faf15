"""Test-only launcher: `python tests/launch.py [faults] -- ARGS` runs `torchcls ARGS` (the real CLI)
with faults injected from outside the package, through its public seams:

  --dump-weights DIR      every rank saves its final weights and metrics as DIR/rank<R>.pt/.json
                          (wraps Trainer.fit; `trainer.run.raw_model` is the trained module)
  --crash-after-epoch N   the last rank exits with status 1 after epoch N (an on_epoch_end callback),
                          on a torchrun job's first attempt only (TORCHELASTIC_RESTART_COUNT 0)
  --slow-save SECONDS     sleep between writing a checkpoint's temporary file and renaming it over
                          the old one (wraps os.replace), to kill a process inside that window
  --slow-eval N SECONDS   sleep at the start of this process's Nth evaluation (wraps the trainer's
                          evaluate), to kill a process during an epoch's evaluation

Works under torchrun (`torchrun ... tests/launch.py ...`) and with plain python.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from torchcls import cli
from torchcls.engine import train as train_mod


def install_dump(dump: Path) -> None:
    fit = train_mod.Trainer.fit

    def fit_and_dump(self):
        results = fit(self)
        rank = self.dist.rank
        dump.mkdir(parents=True, exist_ok=True)
        torch.save(self.run.raw_model.state_dict(), dump / f"rank{rank}.pt")
        (dump / f"rank{rank}.json").write_text(json.dumps({k: results[k] for k in ("final", "best")}))
        return results

    train_mod.Trainer.fit = fit_and_dump


def install_crash(at: int) -> None:
    init = train_mod.Trainer.__init__

    def init_with_crash(self, cfg, log=print, on_epoch_end=None):
        def crash(epoch, row):
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            world = int(os.environ.get("WORLD_SIZE", "1"))
            last_rank = int(os.environ.get("RANK", "0")) == world - 1
            if epoch == at and last_rank and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
                print(f"launch.py: rank {world - 1} exits on purpose after epoch {at}", file=sys.stderr, flush=True)
                os._exit(1)

        init(self, cfg, log, crash)

    train_mod.Trainer.__init__ = init_with_crash


def install_slow_save(seconds: float) -> None:
    replace = os.replace

    def slow_replace(src, dst, *a, **kw):
        if str(src).endswith(".tmp") and ".pth.tar." in str(src):
            time.sleep(seconds)
        return replace(src, dst, *a, **kw)

    os.replace = slow_replace


def install_slow_eval(nth: int, seconds: float) -> None:
    evaluate, calls = train_mod.evaluate, []

    def slow_evaluate(*a, **kw):
        calls.append(1)
        if len(calls) == nth:
            time.sleep(seconds)
        return evaluate(*a, **kw)

    train_mod.evaluate = slow_evaluate


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser()
    p.add_argument("--dump-weights", type=Path)
    p.add_argument("--crash-after-epoch", type=int)
    p.add_argument("--slow-save", type=float)
    p.add_argument("--slow-eval", type=float, nargs=2)
    faults = p.parse_args(argv[:split])
    if faults.dump_weights:
        install_dump(faults.dump_weights)
    if faults.crash_after_epoch:
        install_crash(faults.crash_after_epoch)
    if faults.slow_save:
        install_slow_save(faults.slow_save)
    if faults.slow_eval:
        install_slow_eval(int(faults.slow_eval[0]), faults.slow_eval[1])
    return cli.main(argv[split + 1 :])


if __name__ == "__main__":
    raise SystemExit(main())
