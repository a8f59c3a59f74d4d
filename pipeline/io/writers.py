"""Atomic output writing: tables are streamed into a staging folder inside ``--out`` and moved
into place only when the run succeeds; the DuckDB file is updated in one transaction.

A run that dies half-way therefore leaves the previous run's outputs untouched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

STAGING_PREFIX = ".staging-"


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

    def writer(self, name: str, schema: pa.Schema) -> TableWriter:
        return TableWriter(self.path(name), schema)

    def publish(self, names: list[str]) -> dict[str, Path]:
        """Move the named staged files into ``out_dir`` (each move is atomic)."""
        published = {}
        for name in names:
            target = self.out_dir / name
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


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def publish_duckdb(db_path: Path, tables: dict[str, Path]) -> None:
    """Replace each named table in ``db_path`` with the Parquet file's content, atomically."""
    con = duckdb.connect(str(db_path))
    try:
        con.execute("BEGIN TRANSACTION")
        for name, parquet in tables.items():
            if not name.isidentifier():
                raise ValueError(f"bad table name {name!r}")
            con.execute(
                f"CREATE OR REPLACE TABLE {name} AS "
                f"SELECT * FROM read_parquet({_sql_string(str(parquet))})"
            )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()
