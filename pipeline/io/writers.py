"""Atomic output writing: tables are streamed into a staging folder inside ``--out`` and moved
into place only when the run succeeds; the DuckDB file is updated in one transaction.

A run that dies half-way therefore leaves the previous run's outputs untouched.

Every path written is checked to lie inside ``--out`` (:func:`inside`): names that come from
configuration (the DuckDB file name) cannot point elsewhere with ``..``, an absolute path or
a symbolic link.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.readers import InputError

STAGING_PREFIX = ".staging-"


class UnsafePath(InputError, ValueError):
    """A configured or derived output path would land outside ``--out`` (the CLI exits 2)."""


def inside(out_dir: Path, name: str | Path) -> Path:
    """``out_dir / name`` resolved, provided it stays inside ``out_dir`` (else :class:`UnsafePath`).

    Symbolic links are resolved, so a link in ``--out`` pointing elsewhere is refused too.
    """
    root = Path(out_dir).resolve()
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        raise UnsafePath(f"{name!s}: resolves to {target}, outside the output folder {root}; "
                         "use a plain file name")
    return target


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over
    ``path``: readers (and a run killed mid-write) see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class TableWriter:
    """Streams DataFrame chunks into one Parquet file with a fixed schema."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(path, schema, compression="zstd")

    def append(self, frame: pd.DataFrame) -> None:
        """Append ``frame`` (extra columns are ignored, missing ones are null)."""
        if frame.empty:
            return
        columns = {}
        for fld in self.schema:
            values = frame[fld.name] if fld.name in frame else [None] * len(frame)
            columns[fld.name] = pa.array(values, type=fld.type, from_pandas=True)
        assert self._writer is not None, "writer is closed"
        self._writer.write_table(pa.table(columns, schema=self.schema))
        self.rows += len(frame)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class Staging:
    """A private folder under ``out_dir`` for one run's files, published by rename."""

    def __init__(self, out_dir: Path, run_id: str) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(f"{STAGING_PREFIX}*"):  # left by a killed run
            shutil.rmtree(stale, ignore_errors=True)
        self.dir = out_dir / f"{STAGING_PREFIX}{run_id}"
        self.dir.mkdir()

    def path(self, name: str) -> Path:
        return self.dir / name

    def publish(self, names: list[str]) -> dict[str, Path]:
        """Move the named staged files into ``out_dir`` (each move is atomic)."""
        published = {}
        for name in names:
            target = inside(self.out_dir, name)
            os.replace(self.path(name), target)
            published[name] = target
        return published

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def write_parquet(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> Path:
    """Write a small table in one go (used for roll-ups)."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, path, compression="zstd")
    return path


def publish_duckdb(db_path: Path, tables: dict[str, Path]) -> None:
    """Replace each named table in ``db_path`` with the Parquet file's content, atomically.

    One transaction: a run killed part-way leaves every table as it was. A transient failure
    (another process holding the file's lock, an I/O error) is retried with backoff
    (:func:`pipeline.retry.retry`); the transaction is rolled back before each retry.
    """
    from pipeline.retry import retry

    for name in tables:
        if not name.isidentifier():  # table names are internal; still never interpolate junk
            raise ValueError(f"bad table name {name!r}")
    retry(lambda: _publish_duckdb_once(db_path, tables), f"DuckDB write to {db_path}")


@contextmanager
def duckdb_transaction(db_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to ``db_path`` inside one transaction: committed if the block succeeds,
    rolled back (nothing changed) if it raises."""
    con = duckdb.connect(str(db_path))
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()


def _publish_duckdb_once(db_path: Path, tables: dict[str, Path]) -> None:
    with duckdb_transaction(db_path) as con:
        for name, parquet in tables.items():
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM read_parquet(?)",
                        [str(parquet)])
