"""Progress for long runs: a live line on a terminal, periodic log lines elsewhere (CI, cron)."""

from __future__ import annotations

import logging
import sys
import time

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

log = logging.getLogger("revsat")


class RowProgress:
    """Counts rows read and scored and shows the rate; use as a context manager."""

    def __init__(self, enabled: bool = True, label: str = "scoring", log_every: float = 10.0):
        self.enabled = enabled
        self.label = label
        self.log_every = log_every
        self.read = self.scored = 0
        self._start = time.perf_counter()
        self._last_log = self._start
        console = Console(file=sys.stderr)
        self._live = enabled and console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) if self._live else None
        self._task = None

    def __enter__(self) -> RowProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, detail="")
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self.enabled:
            log.info("%s: %s", self.label, self.summary())

    def rate(self) -> float:
        """Reviews scored per second so far."""
        return self.scored / max(time.perf_counter() - self._start, 1e-9)

    def summary(self) -> str:
        """Rows read and scored, and the rate, in words."""
        return f"{self.read:,} rows read, {self.scored:,} scored, {self.rate():,.0f} reviews/s"

    def update(self, read: int, scored: int, where: str = "") -> None:
        """Count ``read`` more rows read and ``scored`` more scored (in ``where``)."""
        self.read += read
        self.scored += scored
        if not self.enabled:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, detail=f"{self.summary()} {where}")
        now = time.perf_counter()
        if not self._live and now - self._last_log >= self.log_every:
            self._last_log = now
            log.info("%s: %s %s", self.label, self.summary(), where)
