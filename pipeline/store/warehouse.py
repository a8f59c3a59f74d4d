"""Copy the published tables into a warehouse database for dashboards (any SQLAlchemy URL).

Each table has a declared key; rows are *upserted* by it, so re-running a night (or scoring the
same reviews again) updates rows instead of duplicating them, and the warehouse accumulates
runs while the DuckDB file's plain tables hold the latest run:

- PostgreSQL and SQLite: ``INSERT ... ON CONFLICT (key) DO UPDATE`` in one transaction;
- any other dialect: delete the batch's keys, then insert (same transaction).

Tables are created on first use with a primary key on the key columns; columns new to an
existing table are added. Lists, structs and maps are stored as JSON text. Null key values are
stored as ``''`` (a primary key cannot hold NULL). The DuckDB file stays the default store; this
module only reads it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from pipeline.catalog import TABLES
from pipeline.store.duck import file_tables

#: Warehouse tables (same names as in the DuckDB file) and their keys: every table of the
#: catalog with a key. Tables absent from the DuckDB file are skipped; a key column a table
#: lacks is left out of its key.
TABLE_KEYS: dict[str, list[str]] = {t.name: list(t.key) for t in TABLES.values() if t.key}

BATCH_ROWS = 5_000


def _sa_type(t: pa.DataType, key: bool) -> sa.types.TypeEngine:
    if pa.types.is_boolean(t):
        return sa.Boolean()
    if pa.types.is_integer(t):
        return sa.BigInteger()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return sa.Float(precision=53)
    if pa.types.is_date(t):
        return sa.Date()
    if pa.types.is_timestamp(t):
        return sa.DateTime(timezone=t.tz is not None)
    if key:
        return sa.String(255)
    return sa.Text()


def _is_json(t: pa.DataType) -> bool:
    return pa.types.is_nested(t)


def _py(value, as_json: bool):
    if as_json:
        return None if value is None else json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _rows(batch: pa.RecordBatch, key: list[str]) -> list[dict]:
    json_cols = {f.name for f in batch.schema if _is_json(f.type)}
    rows = batch.to_pylist()
    out = []
    for row in rows:
        rec = {c: _py(v, c in json_cols) for c, v in row.items()}
        for k in key:
            if rec.get(k) is None:
                rec[k] = ""
        out.append(rec)
    # One statement may not touch a key twice (ON CONFLICT): the last row of a key wins.
    return list({tuple(r[k] for k in key): r for r in out}.values())


def _ensure_table(engine: sa.Engine, name: str, schema: pa.Schema, key: list[str]) -> sa.Table:
    meta = sa.MetaData()
    insp = sa.inspect(engine)
    if not insp.has_table(name):
        cols = [sa.Column(f.name, _sa_type(f.type, f.name in key), primary_key=f.name in key,
                          nullable=f.name not in key) for f in schema]
        table = sa.Table(name, meta, *cols)
        meta.create_all(engine, tables=[table])
        return table
    existing = {c["name"] for c in insp.get_columns(name)}
    missing = [f for f in schema if f.name not in existing]
    if missing:
        with engine.begin() as con:
            for f in missing:
                coltype = _sa_type(f.type, False).compile(dialect=engine.dialect)
                con.execute(sa.text(
                    f"ALTER TABLE {engine.dialect.identifier_preparer.quote(name)} ADD COLUMN "
                    f"{engine.dialect.identifier_preparer.quote(f.name)} {coltype}"))
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def _upsert(con: sa.Connection, table: sa.Table, rows: list[dict], key: list[str],
            method: str) -> None:
    if not rows:
        return
    dialect = con.dialect.name
    if method == "auto" and dialect in ("postgresql", "sqlite"):
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table)
        update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in key}
        stmt = (stmt.on_conflict_do_update(index_elements=key, set_=update) if update
                else stmt.on_conflict_do_nothing(index_elements=key))
        con.execute(stmt, rows)
        return
    # Generic: delete the keys of this batch, then insert.
    cond = sa.and_(*[table.c[k] == sa.bindparam(f"k_{k}") for k in key])
    con.execute(table.delete().where(cond), [{f"k_{k}": r[k] for k in key} for r in rows])
    con.execute(table.insert(), rows)


def _batches(db: Path, name: str) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    con = duckdb.connect(str(db), read_only=True)
    reader = con.sql(f'SELECT * FROM "{name}"').to_arrow_reader(BATCH_ROWS)

    def gen() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            con.close()

    return reader.schema, gen()


def export_duckdb(db: Path, url: str, tables: Iterable[str] | None = None,
                  method: str = "auto") -> dict[str, int]:
    """Upsert the tables of the DuckDB file ``db`` into the database at ``url``.

    ``tables`` defaults to every table of :data:`TABLE_KEYS` present in ``db``. ``method``
    ``auto`` uses the dialect's ``ON CONFLICT`` where it has one; ``delete-insert`` forces the
    generic path. Returns rows written per table. Each table is one transaction.
    """
    present = file_tables(db)
    wanted = [t for t in (tables or TABLE_KEYS) if t in present]
    engine = sa.create_engine(url)
    written: dict[str, int] = {}
    try:
        for name in wanted:
            schema, batches = _batches(db, name)
            key = [k for k in TABLE_KEYS.get(name, []) if k in schema.names]
            if not key:
                raise ValueError(f"table {name!r} has no declared key columns")
            table = _ensure_table(engine, name, schema, key)
            n = 0
            with engine.begin() as con:
                for batch in batches:
                    rows = _rows(batch, key)
                    _upsert(con, table, rows, key, method)
                    n += len(rows)
            written[name] = n
    finally:
        engine.dispose()
    return written
