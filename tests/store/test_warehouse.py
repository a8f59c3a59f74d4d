"""Warehouse export: the published tables upserted into an SQL database (SQLite here; the
PostgreSQL path runs in the server integration test)."""

from __future__ import annotations

import duckdb
import pytest
import sqlalchemy as sa

from pipeline.store.warehouse import export_duckdb


def _count(engine, table: str) -> int:
    with engine.connect() as con:
        return con.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()


@pytest.mark.parametrize("method", ["auto", "delete-insert"])
def test_export_upserts_without_duplicates(sample_run, tmp_path, method):
    out, _record = sample_run
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    first = export_duckdb(out / "revsat.duckdb", url, method=method)
    assert {"reviews", "satisfaction", "runs"} <= set(first)
    again = export_duckdb(out / "revsat.duckdb", url, method=method)
    assert again == first
    engine = sa.create_engine(url)
    con = duckdb.connect(str(out / "revsat.duckdb"), read_only=True)
    try:
        for table in ("reviews", "satisfaction", "history_satisfaction", "alerts"):
            if table in first:
                n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                assert _count(engine, table) == n, table
        runs = con.execute("SELECT count(DISTINCT run_id) FROM runs").fetchone()[0]
        assert _count(engine, "runs") == runs
    finally:
        con.close()
    with engine.connect() as c:
        row = c.execute(sa.text(
            "SELECT \"index\" FROM satisfaction WHERE grouping='all' AND dimension='overall'"
        )).scalar_one()
        tokens = c.execute(sa.text("SELECT tokens FROM reviews LIMIT 1")).scalar_one()
    assert 0 <= row <= 100
    assert tokens.startswith("[")
    engine.dispose()


def test_changed_rows_are_updated(tmp_path):
    db = tmp_path / "r.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE runs AS SELECT 'a' AS run_id, 1 AS rows_in")
    con.close()
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    export_duckdb(db, url)
    con = duckdb.connect(str(db))
    con.execute("CREATE OR REPLACE TABLE runs AS SELECT * FROM (VALUES ('a', 5, 'x'), "
                "('b', 2, 'y')) t(run_id, rows_in, model_version)")
    con.close()
    export_duckdb(db, url)  # a new column is added, 'a' updated, 'b' inserted
    engine = sa.create_engine(url)
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT run_id, rows_in, model_version FROM runs "
                                 "ORDER BY run_id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("a", 5, "x"), ("b", 2, "y")]
