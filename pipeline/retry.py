"""Retries with exponential backoff for the steps that can fail transiently.

Used for reading input files (network mounts drop connections, NFS returns ``EIO``/``ESTALE``)
and for DuckDB writes (another process can hold the database file's lock for a moment).
Errors that no retry can fix — a missing file, a directory, no permission, bad data — are
raised at once. A small helper rather than a dependency: the library must also work outside
Prefect, whose task retries only cover whole tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

log = logging.getLogger("revsat")

T = TypeVar("T")

#: OSErrors that mean "this will not get better by waiting".
PERMANENT_OS_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
)

#: Defaults: 4 attempts, waits 0.2 s, 0.4 s, 0.8 s (capped at 5 s) between them.
ATTEMPTS = 4
BASE_DELAY = 0.2
MAX_DELAY = 5.0


def backoff_delays(attempts: int = ATTEMPTS, base: float = BASE_DELAY,
                   cap: float = MAX_DELAY) -> list[float]:
    """The waits between ``attempts`` tries: ``base * 2**i`` capped at ``cap``."""
    return [min(cap, base * 2**i) for i in range(max(0, attempts - 1))]


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: I/O errors other than the permanent ones, and DuckDB
    I/O errors (lock conflicts, files busy)."""
    if isinstance(exc, PERMANENT_OS_ERRORS):
        return False
    if isinstance(exc, OSError):
        return True
    try:
        import duckdb
    except ImportError:  # pragma: no cover - duckdb is a dependency
        return False
    return isinstance(exc, duckdb.IOException)


def retry_iter(make: Callable[[], Iterable[T]], what: str, *, attempts: int = ATTEMPTS,
               base: float = BASE_DELAY, cap: float = MAX_DELAY,
               sleep: Callable[[float], None] = time.sleep) -> Iterator[T]:
    """Yield the items of ``make()``; on a transient error wait, call ``make()`` again and
    resume after the items already yielded (``make`` must give the same items every time),
    up to ``attempts`` times. ``what`` names the step in the log line of each retry; the last
    error is re-raised, and errors no retry can fix are raised at once."""
    delays = backoff_delays(attempts, base, cap)
    done = 0
    for attempt in range(attempts):
        try:
            for index, item in enumerate(make()):
                if index < done:
                    continue  # already handed out before the failure
                yield item
                done += 1
            return
        except Exception as exc:
            if not is_transient(exc) or attempt == len(delays):
                raise
            log.warning("%s failed (%s: %s); retry %d/%d in %.1f s, resuming after item %d",
                        what, type(exc).__name__, exc, attempt + 1, len(delays),
                        delays[attempt], done)
            sleep(delays[attempt])


def retry(fn: Callable[[], T], what: str, *, attempts: int = ATTEMPTS,
          base: float = BASE_DELAY, cap: float = MAX_DELAY,
          sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``fn()``; on a transient error wait and try again, up to ``attempts`` times
    (:func:`retry_iter` of the one result)."""
    return next(retry_iter(lambda: (fn(),), what, attempts=attempts, base=base, cap=cap,
                           sleep=sleep))
