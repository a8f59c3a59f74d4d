"""DuckDB connections used by the pipeline are capped and spill to a private folder."""

from __future__ import annotations

import glob
import tempfile

import pytest

from pipeline.config import Settings
from pipeline.store import duck


def test_connections_are_capped_and_spill_privately(monkeypatch):
    monkeypatch.setenv("REVSAT_DUCKDB_MEMORY", "200MB")
    with duck.connect(Settings().duckdb_memory) as con:  # settings: the only reader of env
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert limit.endswith("MiB") and float(limit.split()[0]) < 200  # 200 MB = 190.7 MiB
        # A sort larger than the cap completes by spilling to this connection's own folder.
        rows = con.execute(
            "SELECT count(*) FROM (SELECT md5(i::VARCHAR) || md5((i * 7)::VARCHAR) AS s "
            "FROM range(4000000) t(i) ORDER BY s)").fetchone()[0]
        spill = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        assert rows == 4_000_000
        assert spill.startswith(tempfile.gettempdir()) and "revsat-duckdb-" in spill
    assert not glob.glob(spill)  # removed with the connection


def test_bad_memory_setting_is_refused(monkeypatch):
    monkeypatch.setenv("REVSAT_DUCKDB_MEMORY", "lots")
    with pytest.raises(ValueError, match="512MB or 2GB"):
        Settings()


def test_a_query_over_the_cap_says_which_setting_to_raise():
    from pipeline.errors import MemoryCapTooSmall, UserError

    with pytest.raises(MemoryCapTooSmall, match=r"duckdb_memory .*REVSAT_DUCKDB_MEMORY") as err:
        with duck.connect("16MB") as con:  # one list of 20 million integers cannot spill
            con.execute("SELECT list(i) FROM range(20000000) t(i)").fetchall()
    assert isinstance(err.value, UserError) and "16MB" in str(err.value)


def test_the_publishing_transaction_is_capped_too(tmp_path):
    from pipeline.errors import MemoryCapTooSmall
    from pipeline.store.writers import duckdb_transaction

    with duckdb_transaction(tmp_path / "x.duckdb", "100MB") as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        assert limit.endswith("MiB") and float(limit.split()[0]) < 100
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
    with pytest.raises(MemoryCapTooSmall, match="16MB"):
        with duckdb_transaction(tmp_path / "x.duckdb", "16MB") as con:
            con.execute("CREATE TABLE u AS SELECT list(i) AS l FROM range(20000000) t(i)")
    with duckdb_transaction(tmp_path / "x.duckdb") as con:  # the failed one was rolled back
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'u'"
                           ).fetchone()[0] == 0
