"""The merge of a run's chunk parts into its staged ``reviews``/``rejected``/``warnings`` tables.

A part is one chunk's ``<name>.reviews.parquet`` (with each row's input values as ``raw``),
``<name>.rejected.parquet`` and ``<name>.warnings.parquet``, finished by ``<name>.done.json``
(see :mod:`pipeline.run.part`). The run-wide duplicate rule lives here, once: of the rows
sharing a review id, the first (input file order, then row) is kept; later ones are rejected
with their input values and a reason naming the first. Chunk order and parallelism therefore
never change the result. Runs out of core in DuckDB.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.catalog import TABLES
from pipeline.config import DEFAULT_DUCKDB_MEMORY
from pipeline.store import duck

#: The tables a run's parts hold, in the order they are merged.
PART_TABLES = ("reviews", "rejected", "warnings")


def part_file(parts_dir: Path, name: str, table: str) -> Path:
    """The file of ``table`` in part ``name``."""
    return parts_dir / f"{name}.{table}.parquet"


def merge_parts(parts_dir: Path, staging_dir: Path, sources: list[str], run_id: str,
                memory_limit: str = DEFAULT_DUCKDB_MEMORY) -> dict[str, int]:
    """Merge the part files into staged ``reviews``/``rejected``/``warnings`` Parquet files
    (see the module doc for duplicates). Returns the row count of each table."""
    glob = {t: str(parts_dir / f"*.{t}.parquet") for t in PART_TABLES}
    staged = {t: str(staging_dir / TABLES[t].file) for t in PART_TABLES}
    with duck.connect(memory_limit) as con:
        con.execute("SET preserve_insertion_order = false")
        order = pd.DataFrame({"source_file": sources, "file_order": range(len(sources))})
        con.register("file_order", order)
        reviews_cols = ", ".join(f'r."{f.name}"' for f in TABLES["reviews"].schema)
        # The duplicate rule runs over the keys only: a window over whole rows (text, raw
        # values, every prediction) held them all and needed more than 512 MB at a million
        # rows; the rows then stream through a join with the kept keys.
        ranked = """WITH ranked AS (
            SELECT r.source_file, r.source_row, r.review_id,
              row_number() OVER w AS rn,
              first_value(r.source_file) OVER w AS first_file,
              first_value(r.source_row) OVER w AS first_row
            FROM read_parquet(?) r
            JOIN file_order o USING (source_file)
            WINDOW w AS (PARTITION BY r.review_id ORDER BY o.file_order, r.source_row))"""
        con.execute(
            f"""COPY ({ranked} SELECT * REPLACE (?::VARCHAR AS run_id) FROM (
                      SELECT {reviews_cols} FROM read_parquet(?) r
                      SEMI JOIN (SELECT source_file, source_row FROM ranked WHERE rn = 1) k
                        ON r.source_file = k.source_file AND r.source_row = k.source_row)
                      ORDER BY source_file, source_row)
                TO ? (FORMAT parquet, COMPRESSION zstd)""",
            [glob["reviews"], run_id, glob["reviews"], staged["reviews"]],
        )
        con.execute(
            f"""COPY ({ranked}
                SELECT source_file, source_row, raw, reason, ?::VARCHAR AS run_id FROM
                  read_parquet(?)
                UNION ALL
                -- nullable, as the rejected schema declares it (DuckDB would infer NOT NULL)
                SELECT r.source_file, r.source_row, CASE WHEN k.rn > 1 THEN r.raw END AS raw,
                  'duplicate review_id ''' || r.review_id || ''': first seen in '
                  || k.first_file || ' row ' || k.first_row || ' (first occurrence wins)'
                  AS reason,
                  ?::VARCHAR AS run_id
                FROM read_parquet(?) r
                JOIN (SELECT * FROM ranked WHERE rn > 1) k
                  ON r.source_file = k.source_file AND r.source_row = k.source_row
                ORDER BY source_file, source_row)
              TO ? (FORMAT parquet, COMPRESSION zstd)""",
            [glob["reviews"], run_id, glob["rejected"], run_id, glob["reviews"],
             staged["rejected"]],
        )
        con.execute(
            """COPY (SELECT * REPLACE (?::VARCHAR AS run_id) FROM read_parquet(?)
                     ORDER BY source_file, source_row)
               TO ? (FORMAT parquet, COMPRESSION zstd)""",
            [run_id, glob["warnings"], staged["warnings"]],
        )
        return {t: con.execute("SELECT count(*) FROM read_parquet(?)", [staged[t]]).fetchone()[0]
                for t in PART_TABLES}
