"""DuckDB connections for the pipeline's queries over its Parquet files, with a memory cap, and
the small helpers every caller shares (table listing).

DuckDB takes up to 80 % of the machine's memory by default. The merge of parts, the
complaint-term counts (one row per distinct token of every review) and the roll-ups are the
steps whose working set grows with the input; capped, DuckDB spills to a temporary folder
instead, so the peak memory of a run stays flat whatever the input size.

Values (paths included) are always passed as parameters (``read_parquet(?)``, ``COPY ... TO
?``); table names are internal identifiers only.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipeline.config import DEFAULT_DUCKDB_MEMORY
from pipeline.errors import MemoryCapTooSmall


@contextmanager
def memory_errors(memory_limit: str) -> Iterator[None]:
    """Turn DuckDB's out-of-memory error inside the block into
    :class:`~pipeline.errors.MemoryCapTooSmall`, which says which setting to raise."""
    failure = None
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        failure = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if failure is not None:
        # raised outside the handler: DuckDB's exception (and what its traceback holds) is
        # not chained to ours
        raise MemoryCapTooSmall(
            f"DuckDB needed more than its memory cap of {memory_limit} ({failure}); raise "
            "duckdb_memory (revsat.toml) or REVSAT_DUCKDB_MEMORY, e.g. to 1GB or 2GB, and run "
            "again: nothing was published, and the scored parts are reused")


@contextmanager
def connect(memory_limit: str = DEFAULT_DUCKDB_MEMORY) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection capped at ``memory_limit`` (``duckdb_memory`` in
    :class:`pipeline.config.Settings`, checked there), spilling to a folder of its own under
    the system's temporary folder (DuckDB creates it only when it spills and removes it when
    the connection closes; its own name keeps parallel workers apart), closed on exit.

    A query that needs more than the cap even with spilling (the merge of a million rows
    needs more than 512 MB) raises :class:`~pipeline.errors.MemoryCapTooSmall` (see
    :func:`memory_errors`) instead of DuckDB's own error."""
    con = duckdb.connect()
    try:
        with memory_errors(memory_limit):
            con.execute("SET memory_limit = ?", [memory_limit])
            con.execute("SET enable_progress_bar = false")  # logs, not a terminal
            spill = (Path(tempfile.gettempdir())
                     / f"revsat-duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            con.execute("SET temp_directory = ?", [str(spill)])
            yield con
    finally:
        con.close()


def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the tables in the database ``con`` is connected to."""
    return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables")
            .fetchall()}


def file_tables(db: Path) -> set[str]:
    """Names of the tables in the DuckDB file ``db`` (empty when the file does not exist)."""
    if not db.is_file():
        return set()
    with duckdb.connect(str(db), read_only=True) as con:
        return tables(con)


def register_parquet(con: duckdb.DuckDBPyConnection, name: str, path: str | Path) -> None:
    """Expose the Parquet file ``path`` to queries on ``con`` as the temporary view ``name``
    (the path is never written into SQL; nothing is stored in a database file)."""
    con.register(name, con.read_parquet(str(path)))
