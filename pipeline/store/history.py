"""Run history in the DuckDB file.

Every run appends its tables to ``history_*`` tables of ``--out/revsat.duckdb``, keyed by
``run_date`` (``--run-date``): ``history_runs`` (one row per run date), ``history_satisfaction``,
``history_drivers``, ``history_alerts`` and ``history_complaint_terms`` (the ``history`` of each
table in :data:`pipeline.catalog.TABLES`). Re-running a date first deletes that date's rows, in
the same transaction as the insert, so a date is never duplicated and a failed write changes
nothing. The ``runs`` table is a plain log: one row per run, appended.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from pipeline.catalog import DIMENSIONS
from pipeline.store.duck import register_parquet, tables


def load_history(
    db: Path,
    before: date,
    table: str = "history_satisfaction",
    groupings: Sequence[str] | None = None,
    last_runs: int | None = None,
) -> pd.DataFrame:
    """Rows of a history table with ``run_date`` before ``before`` (empty when none), limited
    to ``groupings`` and to the ``last_runs`` latest run dates when given."""
    if not db.is_file():
        return pd.DataFrame()
    if not table.isidentifier():
        raise ValueError(f"bad table name {table!r}")
    with duckdb.connect(str(db), read_only=True) as con:
        if table not in tables(con):
            return pd.DataFrame()
        where, params = ["run_date < ?"], [before]
        if groupings is not None:
            where.append(f"grouping IN ({', '.join('?' * len(groupings))})")
            params += list(groupings)
        if last_runs is not None:
            where.append(f"run_date IN (SELECT DISTINCT run_date FROM {table} WHERE run_date < ? "
                         f"ORDER BY run_date DESC LIMIT {int(last_runs)})")
            params.append(before)
        return con.execute(
            f"SELECT * FROM {table} WHERE {' AND '.join(where)} ORDER BY run_date", params
        ).df()


def run_row(record: dict, overall: dict[str, float]) -> pa.Table:
    """The ``history_runs`` row of a run: its record plus the ``all``-group indices."""
    row = {
        "run_date": date.fromisoformat(record["run_date"]),
        **{k: record.get(k) for k in ("run_id", "started_at", "finished_at", "model_version",
                                       "tool_version", "rows_in", "rows_scored",
                                       "rows_rejected", "driver_method", "alerts")},
        "composite_weights": json.dumps(record.get("composite_weights")),
        **{f"{dim}_index": overall.get(dim) for dim in ("composite", "overall", *DIMENSIONS)},
    }
    return pa.Table.from_pylist([row])


def _insert(con: duckdb.DuckDBPyConnection, name: str, source: Path | pa.Table,
            existing: set[str], replace_date: date | None) -> None:
    """Create ``name`` if needed, add new columns, optionally delete ``replace_date``'s rows,
    then insert ``source`` by column name."""
    if not name.isidentifier():
        raise ValueError(f"bad table name {name!r}")
    if isinstance(source, pa.Table):
        con.register("_src", source)
    else:
        register_parquet(con, "_src", source)
    src = "_src"
    select = (f"SELECT * REPLACE (CAST(run_date AS DATE) AS run_date) FROM {src}"
              if replace_date is not None else f"SELECT * FROM {src}")
    if name not in existing:
        con.execute(f"CREATE TABLE {name} AS {select} LIMIT 0")
    have = {r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()}
    for col, typ, *_ in con.execute(f"DESCRIBE {select}").fetchall():
        if col not in have:
            con.execute(f'ALTER TABLE {name} ADD COLUMN "{col}" {typ}')
    if replace_date is not None:
        con.execute(f"DELETE FROM {name} WHERE run_date = ?", [replace_date])
    con.execute(f"INSERT INTO {name} BY NAME {select}")
    con.unregister("_src")


def write_history(con: duckdb.DuckDBPyConnection, run_date: date,
                  sources: dict[str, Path | pa.Table]) -> None:
    """Replace ``run_date``'s rows of each history table with ``sources`` on ``con`` (inside
    the caller's transaction).

    ``sources`` maps a history table name to a Parquet file or an Arrow table. Tables are
    created on first use; columns new to an existing table are added (older rows get null).
    ``run_date`` columns are stored as DATE.
    """
    existing = tables(con)
    for name, source in sources.items():
        _insert(con, name, source, existing, run_date)


def write_log(con: duckdb.DuckDBPyConnection, name: str, source: Path | pa.Table) -> None:
    """Append ``source`` to table ``name`` as is (no replacement), adding new columns."""
    _insert(con, name, source, tables(con), None)


def run_logged(db: Path, run_id: str) -> bool:
    """Whether ``db``'s ``runs`` log holds ``run_id`` (its publication transaction committed)."""
    if not db.is_file():
        return False
    with duckdb.connect(str(db)) as con:  # not read-only: a killed writer's WAL may need replaying
        if "runs" not in tables(con):
            return False
        return con.execute("SELECT count(*) FROM runs WHERE run_id = ?",
                           [run_id]).fetchone()[0] > 0
