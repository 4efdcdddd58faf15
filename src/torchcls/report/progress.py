"""Progress of long work: a tqdm bar on a terminal, plain periodic lines in a file or pipe."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(
        self, total: int, desc: str, interval: float = 10.0, enabled: bool = True, stream=None, initial: int = 0
    ):
        self.total, self.desc, self.interval = total, desc, interval
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.n = initial
        self.start = time.perf_counter()
        self.last_line = self.start
        self.bar = None
        if enabled and self.stream.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream, dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **stats) -> None:
        if not self.enabled:
            return
        self.n += n
        text = "  ".join(f"{k.replace('_', '/')} {v}" for k, v in stats.items())
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix_str(text, refresh=False)
            return
        now = time.perf_counter()
        if now - self.last_line >= self.interval or self.n == self.total:
            self.last_line = now
            elapsed = now - self.start
            eta = elapsed / max(1, self.n) * (self.total - self.n)
            print(f"{self.desc} {self.n}/{self.total}  {text}  eta {eta:.0f}s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
