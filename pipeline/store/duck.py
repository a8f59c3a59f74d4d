"""DuckDB connections for the pipeline's queries over its Parquet files, with a memory cap.

DuckDB takes up to 80 % of the machine's memory by default. The merge of parts, the
complaint-term counts (one row per distinct token of every review) and the roll-ups are the
steps whose working set grows with the input; capped, DuckDB spills to a temporary folder
instead, so the peak memory of a run stays flat whatever the input size.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path

import duckdb

_SIZE = re.compile(r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


@lru_cache(maxsize=1)
def memory_limit() -> str:
    """The configured cap (``duckdb_memory`` in :class:`pipeline.config.Settings`)."""
    from pipeline.config import Settings

    limit = Settings().duckdb_memory.strip()
    if not _SIZE.match(limit):
        raise ValueError(f"duckdb_memory {limit!r}: use a size such as 512MB or 2GB")
    return limit


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection capped at :func:`memory_limit`, spilling to a folder of
    its own under the system's temporary folder (DuckDB creates it only when it spills and
    removes it when the connection closes; its own name keeps parallel workers apart)."""
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit()}'")
    con.execute("SET enable_progress_bar = false")  # logs, not a terminal
    spill = Path(tempfile.gettempdir()) / f"revsat-duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    con.execute("SET temp_directory = ?", [str(spill)])
    return con
