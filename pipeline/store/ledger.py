"""Which daily export files were already scored: the ``ledger`` table in ``OUT/revsat.duckdb``.

A file is identified by the SHA-256 of its bytes, not its name: a file whose hash is in the
ledger is skipped by the nightly run, a new file (or a file whose content changed) is scored.
Files are recorded only after their run published its outputs, so a failed night leaves them
unrecorded and the next run picks them up again. Columns: ``path``, ``sha256``, ``size``,
``first_seen`` (UTC), ``run_id``, ``run_date``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb

from pipeline.ingest.readers import SUPPORTED, file_digest
from pipeline.store.duck import file_tables

__all__ = ["InputFile", "discover", "file_digest", "new_files", "record"]

TABLE = "ledger"
_DDL = (f"CREATE TABLE IF NOT EXISTS {TABLE} (path VARCHAR, sha256 VARCHAR, size BIGINT, "
        "first_seen TIMESTAMP, run_id VARCHAR, run_date DATE)")


@dataclass(frozen=True)
class InputFile:
    """An export file with the hash and size that identify it in the ledger."""

    path: Path
    sha256: str
    size: int


def discover(source: str | Path, pattern: str = "*") -> list[Path]:
    """Export files of a directory (those matching ``pattern`` with a supported suffix, not
    recursive) or of a glob pattern, sorted by name. Hidden and partial (``.tmp``/``.part``)
    files are ignored."""
    source = str(source)
    if Path(source).is_dir():
        candidates = Path(source).glob(pattern)
    else:
        candidates = (Path(p) for p in glob.glob(source))
    return sorted(
        p for p in candidates
        if p.is_file() and p.suffix.lower() in SUPPORTED and not p.name.startswith(".")
    )


def seen_hashes(db: Path) -> set[str]:
    """Hashes already in the ledger (empty when the database or the table does not exist)."""
    if TABLE not in file_tables(db):
        return set()
    with duckdb.connect(str(db), read_only=True) as con:
        return {r[0] for r in con.execute(f"SELECT sha256 FROM {TABLE}").fetchall()}


def new_files(db: Path, paths: list[Path]) -> list[InputFile]:
    """The files among ``paths`` whose content is not in the ledger (a file whose bytes appear
    twice in ``paths`` is returned once)."""
    seen = seen_hashes(db)
    out: list[InputFile] = []
    for path in paths:
        digest = file_digest(path)
        if digest in seen:
            continue
        seen.add(digest)
        out.append(InputFile(path, digest, path.stat().st_size))
    return out


def record(db: Path, files: list[InputFile], run_id: str, run_date: date) -> None:
    """Add ``files`` to the ledger as scored by ``run_id`` (a hash already there is kept)."""
    if not files:
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(db)) as con:
        con.execute("BEGIN TRANSACTION")
        con.execute(_DDL)
        now = datetime.now(UTC).replace(tzinfo=None)
        for f in files:
            con.execute(
                f"INSERT INTO {TABLE} SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
                f"(SELECT 1 FROM {TABLE} WHERE sha256 = ?)",
                [str(f.path), f.sha256, f.size, now, run_id, run_date, f.sha256],
            )
        con.execute("COMMIT")
