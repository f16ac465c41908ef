"""Progress lines on stderr for long work: at most one every few seconds, and one at the end."""

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
        print(
            f"[vaelm] {self.label}: {self.done}/{self.total} units, {self.items} docs, "
            f"{self.items / elapsed:.0f} docs/s, {elapsed:.0f}s",
            file=sys.stderr,
            flush=True,
        )


def say(message: str) -> None:
    print(f"[vaelm] {message}", file=sys.stderr, flush=True)
