"""Atomic output writing: a run's tables are streamed into a snapshot folder inside ``--out``
and published all at once when the run succeeds (:class:`Staging`); the DuckDB file is
updated in one transaction.

A run that dies at any point therefore leaves the previous run's outputs untouched, or the
new run's complete outputs.

Every path written is checked to lie inside ``--out`` (:func:`inside`): names that come from
configuration (the DuckDB file name) cannot point elsewhere with ``..``, an absolute path or
a symbolic link.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import DEFAULT_DUCKDB_MEMORY
from pipeline.errors import UnsafePath
from pipeline.files import replacing
from pipeline.store import duck

log = logging.getLogger("revsat")



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
    """Write ``text`` to ``path`` atomically and durably (see :func:`replacing`)."""
    with replacing(path, fsync=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
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
        """Finish the file (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


WORK_DIR = ".revsat"
JOURNAL = "publish.json"


class Staging:
    """One run's output files, written into a fresh *snapshot* folder and published together.

    Layout inside ``--out``::

        .revsat/snapshots/<run id>/reviews.parquet ...   one folder per published run
        .revsat/current -> snapshots/<run id>             the published snapshot
        reviews.parquet -> .revsat/current/reviews.parquet (one stable link per output)

    Publishing a run is one atomic rename (:meth:`commit` re-points ``.revsat/current``), so
    every output flips from the previous run to the new one at the same instant, and a run
    killed at any moment leaves either the previous set or the new set, never a mix.

    The DuckDB file is updated in one transaction *before* the flip. A journal
    (``.revsat/publish.json``) records the snapshot being published; if the process dies
    between the DuckDB commit and the flip, the next run finds the journal and completes the
    flip when the database already holds the run (``committed``), or drops the snapshot.

    On filesystems without symbolic links the files are copied into place one by one
    instead (each copy atomic, the set not).
    """

    def __init__(self, out_dir: Path, run_id: str,
                 committed: Callable[[str], bool] = lambda run_id: False) -> None:
        self.out_dir = out_dir
        self.work = out_dir / WORK_DIR
        self.dir = _snapshot(out_dir, run_id)
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        recover(out_dir, committed)
        keep = current_snapshot(out_dir)
        for stale in [*self.dir.parent.iterdir(), *out_dir.glob(".staging-*")]:
            if stale.name != keep:  # left by a killed run (or by an older revsat)
                shutil.rmtree(stale, ignore_errors=True)
        self.run_id = run_id
        self.dir.mkdir()

    def path(self, name: str) -> Path:
        """The staged file ``name`` of this snapshot."""
        return self.dir / name

    def begin(self, names: list[str]) -> None:
        """Record in the journal that this snapshot is about to be published."""
        atomic_write_text(self.work / JOURNAL,
                          json.dumps({"run_id": self.run_id, "names": names}))

    def commit(self, names: list[str]) -> dict[str, Path]:
        """Publish the snapshot: re-point ``current``, link the outputs, drop the journal and
        older snapshots. Returns the published paths."""
        return _flip(self.out_dir, self.run_id, names)

    def cleanup(self) -> None:
        """Forget an unpublished snapshot (a failed run); the published one stays."""
        if current_snapshot(self.out_dir) != self.run_id:
            shutil.rmtree(self.dir, ignore_errors=True)
            entry = _journal(self.out_dir)
            if entry is not None and entry["run_id"] == self.run_id:
                (self.work / JOURNAL).unlink()


def current_snapshot(out_dir: Path) -> str | None:
    """Name (run id) of the published snapshot in ``out_dir``, if any."""
    pointer = out_dir / WORK_DIR / "current"
    if pointer.is_symlink():
        return Path(os.readlink(pointer)).name
    if pointer.is_file():  # the copy fallback stores the name as text
        return pointer.read_text(encoding="utf-8").strip() or None
    return None


def recover(out_dir: Path, committed: Callable[[str], bool]) -> str | None:
    """Finish or undo a publication interrupted by a crash (see :class:`Staging`).

    Returns the run id that was completed, or ``None``.
    """
    entry = _journal(out_dir)
    if entry is None:
        return None
    run_id = entry["run_id"]
    if _snapshot(out_dir, run_id).is_dir() and committed(run_id):
        _flip(out_dir, run_id, entry["names"])
        return run_id
    (out_dir / WORK_DIR / JOURNAL).unlink()
    return None


def _snapshot(out_dir: Path, run_id: str) -> Path:
    return out_dir / WORK_DIR / "snapshots" / run_id


def _journal(out_dir: Path) -> dict | None:
    """The pending publication recorded by :meth:`Staging.begin`, if any."""
    journal = out_dir / WORK_DIR / JOURNAL
    return json.loads(journal.read_text(encoding="utf-8")) if journal.is_file() else None


def _flip(out_dir: Path, run_id: str, names: list[str]) -> dict[str, Path]:
    work = out_dir / WORK_DIR
    published = {}
    try:
        _point(work / "current", f"snapshots/{run_id}")
        for name in names:
            inside(out_dir, name)
            entry, link = out_dir / name, f"{WORK_DIR}/current/{name}"
            if not (entry.is_symlink() and os.readlink(entry) == link):
                _point(entry, link)
            published[name] = entry
    except OSError as exc:  # no symbolic links here: copy each file into place
        log.warning("symbolic links unavailable in %s (%s); copying outputs instead",
                    out_dir, exc)
        for name in names:
            target = out_dir / name
            if target.is_symlink():
                target.unlink()
            with replacing(target) as tmp:
                shutil.copyfile(_snapshot(out_dir, run_id) / name, tmp)
            published[name] = target
        (work / "current").unlink(missing_ok=True)
        atomic_write_text(work / "current", run_id)
    _fsync_dir(out_dir)
    _fsync_dir(work)
    (work / JOURNAL).unlink(missing_ok=True)
    for old in _snapshot(out_dir, run_id).parent.iterdir():
        if old.name != run_id:
            shutil.rmtree(old, ignore_errors=True)
    return published


def _point(link: Path, target: str) -> None:
    """Make ``link`` a symbolic link to ``target`` atomically (new link, then rename over)."""
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    """Persist renames in ``path`` (a directory) before the journal goes away."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_parquet(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> Path:
    """Write a small table in one go (roll-ups); with ``schema``, the frame is first cut to it
    (an empty frame too) so every run writes the same columns and types."""
    if schema is not None:
        frame = to_arrow(frame, schema).to_pandas()
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    pq.write_table(table, path, compression="zstd")
    return path


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table of ``schema`` (works for empty frames too)."""
    if frame.empty:
        return schema.empty_table()
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def write_frame(path: Path, schema: pa.Schema, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as one Parquet file of ``schema`` atomically (a chunk part)."""
    with replacing(path) as tmp:
        writer = TableWriter(tmp, schema)
        writer.append(frame)
        writer.close()
    return path


def publish_duckdb(db_path: Path, tables: dict[str, Path],
                   also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
                   memory_limit: str = DEFAULT_DUCKDB_MEMORY) -> None:
    """Replace each named table in ``db_path`` with the Parquet file's content, atomically.

    One transaction, which also runs ``also(connection)`` (the run log and history): a run
    killed part-way leaves every table as it was. A transient failure
    (another process holding the file's lock, an I/O error) is retried with backoff
    (:func:`pipeline.retry.retry`); the transaction is rolled back before each retry.
    """
    from pipeline.retry import retry

    for name in tables:
        if not name.isidentifier():  # table names are internal; still never interpolate junk
            raise ValueError(f"bad table name {name!r}")
    retry(lambda: _publish_duckdb_once(db_path, tables, also, memory_limit),
          f"DuckDB write to {db_path}")


@contextmanager
def duckdb_transaction(db_path: Path, memory_limit: str = DEFAULT_DUCKDB_MEMORY
                       ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to ``db_path`` inside one transaction: committed if the block succeeds,
    rolled back (nothing changed) if it raises. Capped at ``memory_limit`` like every other
    connection of a run (uncapped, DuckDB may take 80 % of the machine: loading a million
    reviews into the database was a run's peak, 1.2 GB above the rest)."""
    with duckdb.connect(str(db_path)) as con, duck.memory_errors(memory_limit):
        con.execute("SET memory_limit = ?", [memory_limit])
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def _publish_duckdb_once(db_path: Path, tables: dict[str, Path],
                         also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
                         memory_limit: str = DEFAULT_DUCKDB_MEMORY) -> None:
    with duckdb_transaction(db_path, memory_limit) as con:
        for name, parquet in tables.items():
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM read_parquet(?)",
                        [str(parquet)])
        if also is not None:
            also(con)
