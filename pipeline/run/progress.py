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


class StepProgress:
    """Training steps with loss, rate and time left: a bar on a terminal, a log line every
    ``log_every`` seconds elsewhere. Use as a context manager; :meth:`advance` once a step."""

    def __init__(self, total: int, done: int = 0, enabled: bool = True,
                 log_every: float = 30.0) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn

        self.total, self.done, self.start_done = total, done, done
        self.log_every = log_every
        self._start = self._last_log = time.perf_counter()
        console = Console(file=sys.stderr)
        self._progress = Progress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
            TextColumn("left"), TimeRemainingColumn(), console=console,
        ) if enabled and console.is_terminal else None
        self._task = None

    def __enter__(self) -> StepProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task("train", total=self.total,
                                                 completed=self.done, loss=0.0)
        return self

    def advance(self, loss: float) -> None:
        """One step done, with its loss."""
        self.done += 1
        now = time.perf_counter()
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, loss=loss)
        elif now - self._last_log >= self.log_every or self.done == self.total:
            self._last_log = now
            per_step = (now - self._start) / max(self.done - self.start_done, 1)
            log.info("step %d/%d  loss %.4f  %.2f s/step  about %.0f min left", self.done,
                     self.total, loss, per_step, per_step * (self.total - self.done) / 60)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
