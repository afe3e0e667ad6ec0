"""A samples progress bar on stderr (rate and ETA) that hides itself when stderr is not a
terminal or with -q, so logs and CI output stay clean."""

from __future__ import annotations

import sys
import time

import click


class SampleProgress:
    def __init__(self, label: str, enabled: bool = True):
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self.total: int | None = None
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    def begin(self, total: int | None) -> None:
        self.total = total
        self.start = time.perf_counter()

    def advance(self, samples: int) -> None:
        self.done += samples
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.done == self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            text = f"{self.label}: {self.done}/{self.total} samples, {rate:.1f}/s, ETA {eta:.0f}s"
        else:
            text = f"{self.label}: {self.done} samples, {rate:.1f}/s"
        click.echo(f"\r{text}\x1b[K", nl=False, err=True)

    def finish(self) -> None:
        if self.enabled:
            click.echo("", err=True)
