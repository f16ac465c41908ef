"""Progress lines on stderr for long work: at most one every few seconds, and one at the end.

Lines are written to the stream, not through print(): Ray Train patches print() in its workers to log
through its logger and, as a Ray worker's output is redirected, to print as well, so the driver showed
every printed line of a training worker twice."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, *, every_s: float = 5.0) -> None:
        self.label, self.total, self.every_s = label, total, every_s
        self.done = self.items = 0
        self.started = self.last = time.monotonic()

    def advance(self, *, units: int = 1, items: int = 0) -> None:
        self.done += units
        self.items += items
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.items / elapsed
        say(f"{self.label}: {self.done}/{self.total} units, {self.items} docs, {rate:.0f} docs/s, {elapsed:.0f}s")


def say(message: str) -> None:
    sys.stderr.write(f"[vaelm] {message}\n")
    sys.stderr.flush()
